"""What crosses HTTP, shared by the server (`vxtap.api`) and the client (`vxtap.client`).

Pure: pydantic only, no I/O, no database, no HTTP client. `fields` holds the
validated field types (Huawei's quirks), `requests` the request bodies, `answers`
the answer shapes, `query` the list queries.
"""
