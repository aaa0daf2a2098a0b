"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``.

It describes what this process answers with its configuration: the public JSON status,
health and metrics always; Open311 when ``[open311] enabled``; the SMS webhook of each
configured gateway and the Telegram webhook in webhook mode. The citizen's HTML pages
(the form, the status page, the rating form) are for browsers and are left out.

It lives with the wiring because it describes every channel's routes at once; the web
channel serves it. The test suite runs schemathesis against the running service with this
document, so a response that does not match it fails the build.
"""

from __future__ import annotations

from bot.statuses import Status
from channels.web import georeport
from service.config import Config

JSON = "application/json"
XML = "text/xml"
FORM = "application/x-www-form-urlencoded"
API_KEY = "open311ApiKey"


def _nullable(kind: str, **extra: object) -> dict:
    return {"type": [kind, "null"], **extra}


def _schemas(config: Config) -> dict:
    instant = {"type": "string", "format": "date-time"}
    schemas = {
        "ApiError": {"type": "object", "required": ["error", "message"],
                     "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
        "PublicStatus": {
            "type": "object", "description": "Where a complaint stands, with no personal data.",
            "required": ["code", "status", "unit", "category", "created", "due", "resolution_due", "replies"],
            "properties": {
                "code": {"type": "string", "description": "The tracking code, e.g. PA-7KQ4-M9XS."},
                "status": {"type": "string",
                           "enum": [status.value for status in Status]},
                "unit": {"type": "object", "required": ["slug", "name", "name_en"],
                         "properties": {"slug": {"type": "string"}, "name": {"type": "string"},
                                        "name_en": {"type": "string"}}},
                "category": _nullable("string"),
                "created": instant,
                "due": _nullable("string", format="date-time", description="The first-response deadline."),
                "resolution_due": _nullable("string", format="date-time"),
                "urgency": {"type": "string", "enum": ["urgent", "normal", "complex"]},
                "description": _nullable("string", description="The complaint's text when the citizen let it be "
                                                               "public, phone numbers and emails taken out."),
                "replies": {"type": "array", "items": {
                    "type": "object", "required": ["at", "text", "files"],
                    "properties": {"at": instant, "text": {"type": "string"},
                                   "files": {"type": "array", "items": {
                                       "type": "object", "required": ["name", "type", "url"],
                                       "properties": {"name": {"type": "string"}, "type": {"type": "string"},
                                                      "url": {"type": "string"}}}}}}},
                "disputable_until": _nullable("string", format="date-time",
                                              description="Until when the citizen may say the resolution did "
                                                          "not fix the problem."),
            },
        },
        "Health": {"type": "object", "required": ["status", "database"],
                   "properties": {"status": {"type": "string", "enum": ["ok", "unavailable"]},
                                  "database": {"type": "string", "enum": ["ok", "error"]}}},
    }
    if config.open311.enabled:
        schemas.update(_georeport_schemas(config))
    return schemas


def _georeport_schemas(config: Config) -> dict:
    instant = {"type": "string", "format": "date-time"}
    return {
        "GeoReportErrors": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["code", "description"],
            "properties": {"code": {"type": "integer"}, "description": {"type": "string"}}}},
        "Discovery": {"type": "object", "required": ["changeset", "endpoints"], "properties": {
            "changeset": instant, "contact": {"type": "string"}, "key_service": {"type": "string"},
            "endpoints": {"type": "array", "items": {
                "type": "object", "required": ["specification", "url", "formats"],
                "properties": {"specification": {"type": "string"}, "url": {"type": "string"},
                               "changeset": instant, "type": {"type": "string"},
                               "formats": {"type": "array", "items": {"type": "string"}}}}}}},
        "Service": {"type": "object", "required": ["service_code", "service_name", "metadata", "type"],
                    "properties": {
                        "service_code": {"type": "string", "enum": [c.slug for c in config.categories]},
                        "service_name": {"type": "string"}, "description": {"type": "string"},
                        "metadata": {"type": "boolean", "const": False}, "type": {"type": "string", "const": "realtime"},
                        "keywords": {"type": "string"}, "group": {"type": "string"}}},
        "ServiceDefinition": {"type": "object", "required": ["service_code", "attributes"], "properties": {
            "service_code": {"type": "string"}, "attributes": {"type": "array", "maxItems": 0}}},
        "ServiceRequest": {
            "type": "object", "description": "A complaint's public status: no address, position or media, which "
                                             "could identify the citizen; the description only when the citizen "
                                             "let it be public, phone numbers and emails taken out.",
            "required": ["service_request_id", "status", "requested_datetime"],
            "properties": {
                "service_request_id": {"type": "string", "description": "The tracking code."},
                "status": {"type": "string", "enum": [georeport.OPEN, georeport.CLOSED]},
                "status_notes": _nullable("string"), "service_name": _nullable("string"),
                "service_code": _nullable("string"), "agency_responsible": _nullable("string"),
                "service_notice": _nullable("string"), "requested_datetime": instant,
                "updated_datetime": _nullable("string", format="date-time"),
                "expected_datetime": _nullable("string", format="date-time",
                                               description="The first-response deadline."),
                "description": _nullable("string"),
                "urgency": {"type": "string", "enum": ["urgent", "normal", "complex"],
                            "description": "Our extension to GeoReport."},
            }},
        "PostedRequest": {"type": "object", "required": ["service_request_id"], "properties": {
            "service_request_id": {"type": "string"}, "service_notice": _nullable("string"),
            "account_id": _nullable("string")}},
    }


def _content(schema: str, xml: bool = False) -> dict:
    content = {JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    if xml:
        content[XML] = {"schema": {"type": "string"}}
    return content


def _answers(ok: str, *errors: int) -> dict:
    responses = {"200": {"description": "OK; XML when the path ends in .xml", "content": _content(ok, xml=True)}}
    for code in errors:
        responses[str(code)] = {"description": "GeoReport error, in the path's format",
                                "content": _content("GeoReportErrors", xml=True)}
    return responses


def _open311_limited(responses: dict) -> dict:
    """A posted request's answers: 429 (flood control) says when to retry."""
    responses["429"] = {**responses["429"], "description": "Too many requests from this address ([open311] "
                        "limit_per_client); GeoReport error, in the path's format",
                        "headers": {"Retry-After": {"description": "Seconds until the client may post again",
                                                    "schema": {"type": "integer"}}}}
    return responses


def _open311_paths(config: Config) -> dict:
    fmt = {"name": "format", "in": "path", "required": True, "schema": {"type": "string", "enum": ["json", "xml"]}}
    jurisdiction = {"name": "jurisdiction_id", "in": "query", "required": False, "schema": {"type": "string"},
                    "description": f"Optional; if given, must be {config.open311.jurisdiction_id!r}."}
    prefix = "/open311/v2"
    text = {"type": "string"}
    post_fields = {
        "api_key": {**text, "description": "One of the keys in [open311] api_keys_env (or in the query)."},
        "jurisdiction_id": text,
        "service_code": {"type": "string", "enum": [c.slug for c in config.categories]},
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "long": {"type": "number", "minimum": -180, "maximum": 180},
        "address_string": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"\S"},
        "address_id": text, "email": {"type": "string", "format": "email"}, "device_id": text,
        "account_id": text, "first_name": {"type": "string", "maxLength": 100},
        "last_name": {"type": "string", "maxLength": 100}, "phone": text,
        "description": {"type": "string", "minLength": 1, "maxLength": 4000, "pattern": r"\S"},
        "media_url": {"type": "string", "format": "uri", "maxLength": 1000},
        "public": {"type": "string", "enum": ["true", "false"], "default": "false",
                   "description": "Our extension: whether the description may be shown publicly (listings show "
                                  "only public requests)."},
    }
    ids = {"name": "service_request_id", "in": "query", "required": False, "schema": {"type": "string"},
           "description": "Tracking codes, comma-separated; overrides every other filter; needs no key."}
    keyed = [{API_KEY: []}]
    return {
        f"{prefix}/discovery.{{format}}": {"get": {
            "summary": "GeoReport service discovery", "tags": ["Open311"], "parameters": [fmt],
            "responses": _answers("Discovery", 404)}},
        f"{prefix}/services.{{format}}": {"get": {
            "summary": "The services: one per complaint category", "tags": ["Open311"],
            "parameters": [fmt, jurisdiction], "responses": _answers_list("Service", 404)}},
        f"{prefix}/services/{{service_code}}.{{format}}": {"get": {
            "summary": "A service's definition", "tags": ["Open311"],
            "parameters": [fmt, jurisdiction, {"name": "service_code", "in": "path", "required": True,
                                               "schema": {"type": "string"}}],
            "responses": _answers("ServiceDefinition", 404)}},
        f"{prefix}/requests.{{format}}": {
            "post": {
                "summary": "File a complaint", "tags": ["Open311"], "security": keyed,
                "description": "Needs a location: lat and long, or address_string; and a description or a "
                               "media_url. The answer's service_request_id is the tracking code.",
                "parameters": [fmt, {"name": "Idempotency-Key", "in": "header", "required": False,
                                     "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,100}$"},
                                     "description": "The same key (with the same api_key) files one complaint."}],
                "requestBody": {"required": True, "content": {FORM: {"schema": {
                    "type": "object", "required": ["service_code"], "properties": post_fields,
                    "allOf": [{"anyOf": [{"required": ["lat", "long"]}, {"required": ["address_string"]}]},
                              {"anyOf": [{"required": ["description"]}, {"required": ["media_url"]}]}]}}}},
                "responses": _open311_limited(_answers_list("PostedRequest", 400, 403, 404, 413, 429))},
            "get": {
                "summary": "Requests by id, or by filters (with an api_key)", "tags": ["Open311"],
                "security": [{API_KEY: []}, {}],
                "parameters": [fmt, jurisdiction, ids,
                               {"name": "service_code", "in": "query", "required": False, "schema": text},
                               {"name": "start_date", "in": "query", "required": False,
                                "schema": {"type": "string", "format": "date-time"}},
                               {"name": "end_date", "in": "query", "required": False,
                                "schema": {"type": "string", "format": "date-time"}},
                               {"name": "status", "in": "query", "required": False, "schema": text}],
                "responses": _answers_list("ServiceRequest", 400, 403, 404)}},
        f"{prefix}/requests/{{service_request_id}}.{{format}}": {"get": {
            "summary": "One request by its id, the tracking code", "tags": ["Open311"],
            "parameters": [fmt, jurisdiction, {"name": "service_request_id", "in": "path", "required": True,
                                               "schema": {"type": "string"}}],
            "responses": _answers_list("ServiceRequest", 400, 404)}},
    }


def _answers_list(item: str, *errors: int) -> dict:
    responses = _answers(item, *errors)
    responses["200"]["content"][JSON] = {"schema": {"type": "array",
                                                    "items": {"$ref": f"#/components/schemas/{item}"}}}
    return responses


def _webhook_paths(config: Config) -> dict:
    paths = {}
    answered = {"2XX": {"description": "Taken (after the message is stored)"},
                "4XX": {"description": "Refused: bad signature, too large, not the gateway's format"}}
    if config.sms.gateways:
        paths["/webhooks/sms/{gateway}"] = {"post": {
            "summary": "An SMS gateway delivers a message", "tags": ["Webhooks"],
            "description": "Signed in the gateway's own way (Twilio's X-Twilio-Signature, the Android app's "
                           "HMAC, the generic gateway's HMAC).",
            "parameters": [{"name": "gateway", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": [g.name for g in config.sms.gateways]}}],
            "requestBody": {"content": {FORM: {"schema": {"type": "object"}}, JSON: {"schema": {"type": "object"}}}},
            "responses": answered}}
    if config.telegram.enabled and config.telegram.mode == "webhook":
        paths["/webhooks/telegram"] = {"post": {
            "summary": "Telegram delivers an update", "tags": ["Webhooks"],
            "parameters": [{"name": "X-Telegram-Bot-Api-Secret-Token", "in": "header", "required": True,
                            "schema": {"type": "string"}}],
            "requestBody": {"content": {JSON: {"schema": {"type": "object"}}}},
            "responses": answered}}
    if config.zalo.enabled:
        paths["/webhooks/zalo"] = {"post": {
            "summary": "Zalo delivers an Official Account event", "tags": ["Webhooks"],
            "description": "Signed by Zalo: X-ZEvent-Signature is mac=<hex SHA-256 of app_id + body + timestamp "
                           "+ the OA secret key>; stale timestamps are refused.",
            "parameters": [{"name": "X-ZEvent-Signature", "in": "header", "required": True,
                            "schema": {"type": "string"}}],
            "requestBody": {"content": {JSON: {"schema": {"type": "object"}}}},
            "responses": {**answered, "503": {"description": "The store is unavailable; Zalo delivers again"}}}}
    return paths


def document(config: Config) -> dict:
    """The OpenAPI document for a service running with this configuration."""
    code = {"name": "code", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "A tracking code in any spelling (PA-7KQ4-M9XS, pa7kq4m9xs)."}
    paths: dict = {
        "/api/v1/complaints/{code}": {"get": {
            "summary": "A complaint's public status", "tags": ["Status"], "parameters": [code],
            "responses": {
                "200": {"description": "The public status", "content": _content("PublicStatus")},
                "400": {"description": "Not a valid tracking code; says why", "content": _content("ApiError")},
                "404": {"description": "No complaint has this code", "content": _content("ApiError")}}}},
        "/healthz": {"get": {"summary": "Health", "tags": ["Operations"], "responses": {
            "200": {"description": "The store answers", "content": _content("Health")},
            "503": {"description": "The store does not answer", "content": _content("Health")}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["Operations"], "responses": {
            "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "tags": ["Operations"], "responses": {
            "200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}}}}},
    }
    if config.open311.enabled:
        paths.update(_open311_paths(config))
    paths.update(_webhook_paths(config))
    components: dict = {"schemas": _schemas(config)}
    if config.open311.enabled:
        components["securitySchemes"] = {API_KEY: {
            "type": "apiKey", "in": "query", "name": "api_key",
            "description": "A key from [open311] api_keys_env. GeoReport clients send it in the form body "
                           "of a POST, which is taken too."}}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{config.service.name_en} HTTP API", "version": "1",
                 "description": "Public complaint status, Open311 GeoReport v2 and webhooks. Times are "
                                "ISO 8601 with an offset; status carries no personal data."},
        "servers": [{"url": config.web.public_url}],
        "paths": paths,
        "components": components,
    }
