"""One `APIRouter` per resource, each with its tags and documented refusals;
`vxtap.api.app.create_app` includes them."""
