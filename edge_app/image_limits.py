"""The largest frame a photo may declare, in a module that loads no OpenCV: edge_app's
package sets OpenCV's own cap from it before any of its modules imports cv2
(edge_app/__init__.py), and edge_app.images checks headers against it; and the largest
frame decoded, which the config (also free of OpenCV) checks the camera's size against."""

MAX_PIXELS = 50_000_000
# What a decode may allocate: 16 MP is 48 MB of RGB. A photo's larger JPEGs decode reduced
# (edge_app.images, rule 3); a camera, stream or video frame above it is skipped, and a
# camera configured above it is refused (4K is 8.3 MP; the Pi cameras' largest is 12.3).
MAX_DECODED_PIXELS = 16_000_000
