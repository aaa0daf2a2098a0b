"""The web channel: the citizen's pages, the public JSON status, Open311 and the OpenAPI document."""
