"""Model control is off by default: nothing can load, unload or replace a model over the network.

TLS, mutual TLS and the restricted-protocol token guarding inference are tested in test_client_tls.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from serving.launch import find_triton, server_command
from wingpt.settings import ServerSettings

pytestmark = pytest.mark.server


def test_the_launched_server_has_model_control_off():
    command = server_command(find_triton(), find_triton().backends, ServerSettings().repo_dir, ServerSettings())
    assert "--model-control-mode=none" in command


@pytest.mark.parametrize("action", ["load", "unload"])
def test_model_control_is_refused_over_http_and_grpc(triton_server, action):
    url = f"http://127.0.0.1:{triton_server.settings.http_port}/v2/repository/models/torch_llm/{action}"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=30)
    assert "model control" in json.loads(caught.value.read())["error"].lower() or caught.value.code >= 400
    with grpc.insecure_channel(triton_server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.RepositoryModelLoad if action == "load" else stub.RepositoryModelUnload
        request_type = service_pb2.RepositoryModelLoadRequest if action == "load" else \
            service_pb2.RepositoryModelUnloadRequest
        with pytest.raises(grpc.RpcError) as rpc:
            call(request_type(model_name="torch_llm"), timeout=30)
        assert rpc.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INVALID_ARGUMENT,
                                    grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED)
        ready = stub.ModelReady(service_pb2.ModelReadyRequest(name="torch_llm"), timeout=10)
        assert ready.ready, "the engine is still loaded"
