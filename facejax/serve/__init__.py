"""A local face-analysis service: every model behind one JSON API
(`app.create_app`), requests batched per model (`batcher`), and a page to
try it on photos (static/). Started by `python -m launch.serve`."""
