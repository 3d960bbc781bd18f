"""The largest frame a photo may declare, in a module that loads no OpenCV: edge_app's
package sets OpenCV's own cap from it before any of its modules imports cv2
(edge_app/__init__.py), and edge_app.images checks headers against it."""

MAX_PIXELS = 50_000_000
