"""The MTCNN cascade (P-Net, R-Net, O-Net) driven by the models manifest."""
