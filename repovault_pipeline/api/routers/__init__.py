"""The API's routes by domain, each an `APIRouter` that `app.create_app` includes."""
