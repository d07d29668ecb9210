"""Schemathesis hooks for tools/api-conformance: each operation gets the credential it is
documented to take (admin, provider or upload token, from the environment the script sets),
and COVID Shield's protobuf bodies are sent as raw bytes."""

import os

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
