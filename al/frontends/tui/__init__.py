"""The Textual front end: a dashboard and a review screen driven only by the core's events (al.core.events).

Nothing here imports torch or Ultralytics; the loop runs on a worker thread (training in its own process).
"""
