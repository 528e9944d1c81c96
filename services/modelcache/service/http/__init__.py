"""The HTTP layer: the FastAPI app, its state, errors, middleware, admission, metrics and routes."""
