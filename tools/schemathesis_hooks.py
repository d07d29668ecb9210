"""Schemathesis hooks for tools/api-conformance: each operation gets the credential it is
documented to take (admin, provider or upload token, from the environment the script sets),
and COVID Shield's protobuf bodies are sent as raw bytes."""

import os
import re

import schemathesis


def bearer_from(variable):
    class Bearer:
        def get(self, case, context):
            return os.environ[variable]

        def set(self, case, data, context):
            case.headers = case.headers or {}
            case.headers["Authorization"] = f"Bearer {data}"

    Bearer.__name__ = f"Bearer_{variable}"
    return Bearer


schemathesis.auth(refresh_interval=None).apply_to(path_regex="^/admin/")(
    bearer_from("CONFIDANT_ADMIN_TOKEN")
)
schemathesis.auth(refresh_interval=None).apply_to(path=["/v1/codes", "/new-key-claim"])(
    bearer_from("CONFIDANT_PROVIDER_TOKEN")
)
schemathesis.auth(refresh_interval=None).apply_to(path="/v1/submissions")(
    bearer_from("CONFIDANT_UPLOAD_TOKEN")
)

schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")


HEX16 = re.compile(r"[0-9a-fA-F]{16}")


def real_provider(value):
    """A well-formed provider id becomes the registered provider's, so TAN imports get past
    the provider lookup; a malformed one stays as generated (negative cases stay negative)."""
    if isinstance(value, str) and HEX16.fullmatch(value):
        return os.environ["CONFIDANT_PROVIDER_ID"]
    return value


@schemathesis.hook
def map_body(ctx, body):
    if ctx.operation.path == "/admin/v1/tans" and isinstance(body, dict) and "provider" in body:
        body["provider"] = real_provider(body["provider"])
    return body


@schemathesis.hook
def map_query(ctx, query):
    if ctx.operation.path == "/admin/v1/tans" and isinstance(query, dict) and "provider" in query:
        query["provider"] = real_provider(query["provider"])
    return query
