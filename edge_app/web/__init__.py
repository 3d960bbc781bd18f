"""The door's web page, served by the `edge-app hub` process (never by the door): docs/WEB.md."""
