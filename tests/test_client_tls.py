"""TLS, mutual TLS and restricted-protocol tokens against two more real Triton servers.

Certificates are generated here (a CA, a server certificate for 127.0.0.1, a client certificate).
One server speaks TLS and restricts the inference protocol to callers with a token header; the
other requires mutual TLS. Both load the repository the session's `triton_server` rendered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from wingpt_client import AsyncWingptClient, InvalidRequestError, UnavailableError, WingptClient

from serving.launch import find_triton, free_port, prepare_backends, server_command, server_env, stop_server, wait_ready

pytestmark = pytest.mark.server

QUESTION = "宝宝15个月37.3度算发烧吗？"
GREEDY = {"temperature": 0.0, "max_tokens": 8}
TOKEN_KEY, TOKEN = "wingpt-token", "s3cret-for-tests"




def _key_and_cert(name: str, issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None, *,
                  server: bool = False) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[1].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif issuer is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return key, builder.sign(issuer[0] if issuer else key, hashes.SHA256())


def _write(directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    ca = _key_and_cert("wingpt test CA", None)
    _write(directory, "ca", *ca)
    _write(directory, "server", *_key_and_cert("127.0.0.1", ca, server=True))
    _write(directory, "client", *_key_and_cert("nurse-station-backend", ca))
    _write(directory, "other-ca", *_key_and_cert("some other CA", None))
    return directory


@dataclasses.dataclass(frozen=True)
class SecureServers:
    tls_url: str
    mtls_url: str


@pytest.fixture(scope="module")
def secure_servers(triton_server, certs, tmp_path_factory) -> Iterator[SecureServers]:
    """Two servers started together (each loads the model), stopped when this module ends."""
    dist = find_triton()
    tls = ["--grpc-use-ssl=true", f"--grpc-server-cert={certs / 'server.crt'}",
           f"--grpc-server-key={certs / 'server.key'}", f"--grpc-root-cert={certs / 'ca.crt'}"]
    variants = {
        "tls": [*tls, f"--grpc-restricted-protocol=inference:{TOKEN_KEY}={TOKEN}"],
        "mtls": [*tls, "--grpc-use-ssl-mutual=true"],
    }
    started = {}
    for name, flags in variants.items():
        work = tmp_path_factory.mktemp(f"triton-{name}")
        settings = dataclasses.replace(
            triton_server.settings, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
        command = server_command(dist, prepare_backends(dist, work), Path(settings.repo_dir), settings) + flags
        log = open(work / "tritonserver.log", "wb")  # noqa: SIM115 - handed to the child process
        process = subprocess.Popen(command, env=server_env(dist), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        started[name] = (settings, process, log)
    try:
        for settings, process, _ in started.values():
            wait_ready(settings, process, timeout_s=240)
        yield SecureServers(*(f"127.0.0.1:{started[n][0].grpc_port}" for n in ("tls", "mtls")))
    finally:
        for _, process, log in started.values():
            stop_server(process, timeout_s=0)  # nothing to drain: only this module's short requests
            log.close()


@pytest.fixture(scope="module")
def plain_answer(triton_server) -> str:
    with WingptClient(triton_server.grpc_url) as c:
        return c.chat(QUESTION, **GREEDY)


def test_tls_with_token_gets_the_same_answer_as_plaintext(secure_servers, certs, plain_answer):
    with WingptClient(secure_servers.tls_url, ssl=True, root_certificates=certs / "ca.crt",
                      token=TOKEN, token_key=TOKEN_KEY) as c:
        assert c.health().ok
        assert c.chat(QUESTION, **GREEDY) == plain_answer
        assert "".join(c.stream_chat(QUESTION, **GREEDY)) == plain_answer


def test_restricted_inference_without_the_token_is_refused_with_the_header_name(secure_servers, certs):
    with WingptClient(secure_servers.tls_url, ssl=True, root_certificates=certs / "ca.crt", retries=0) as c:
        assert c.health().ok, "only the inference protocol is restricted"
        with pytest.raises(InvalidRequestError, match=f"triton-grpc-protocol-{TOKEN_KEY}"):
            c.chat(QUESTION, **GREEDY)
    with WingptClient(secure_servers.tls_url, ssl=True, root_certificates=certs / "ca.crt",
                      token="wrong", token_key=TOKEN_KEY, retries=0) as c, pytest.raises(InvalidRequestError):
        c.chat(QUESTION, **GREEDY)


def test_tls_server_refuses_plaintext_and_unknown_cas(secure_servers, certs):
    with WingptClient(secure_servers.tls_url, retries=0, timeout_s=10) as c, pytest.raises(UnavailableError):
        c.health()
    with WingptClient(secure_servers.tls_url, ssl=True, root_certificates=certs / "other-ca.crt",
                      retries=0, timeout_s=10) as c, pytest.raises(UnavailableError):
        c.health()


def test_mutual_tls_with_a_client_certificate(secure_servers, certs, plain_answer):
    with WingptClient(secure_servers.mtls_url, ssl=True, root_certificates=certs / "ca.crt",
                      private_key=certs / "client.key", certificate_chain=certs / "client.crt") as c:
        assert c.chat(QUESTION, **GREEDY) == plain_answer

    async def async_twin_with_pem_bytes() -> str:
        async with AsyncWingptClient(
            f"grpcs://{secure_servers.mtls_url}", root_certificates=(certs / "ca.crt").read_bytes(),
            private_key=(certs / "client.key").read_bytes(), certificate_chain=(certs / "client.crt").read_bytes(),
        ) as ac:
            return "".join([d async for d in ac.stream_chat(QUESTION, **GREEDY)])

    assert asyncio.run(async_twin_with_pem_bytes()) == plain_answer


def test_mutual_tls_refuses_a_client_without_a_certificate(secure_servers, certs):
    with WingptClient(secure_servers.mtls_url, ssl=True, root_certificates=certs / "ca.crt",
                      retries=0, timeout_s=10) as c, pytest.raises(UnavailableError):
        c.chat(QUESTION, **GREEDY)


def test_cli_tls_flags(secure_servers, certs, plain_answer):
    base = [sys.executable, "-m", "wingpt_client.cli", "--temperature", "0", "--max-tokens", "8", "--ssl",
            "--root-certificates", str(certs / "ca.crt")]
    mtls = subprocess.run(
        [*base, "--url", secure_servers.mtls_url, "--private-key", str(certs / "client.key"),
         "--certificate-chain", str(certs / "client.crt"), QUESTION],
        capture_output=True, text=True, timeout=60)
    assert (mtls.returncode, mtls.stdout) == (0, plain_answer + "\n"), mtls.stderr
    (certs / "token").write_text(TOKEN + "\n")
    tls = subprocess.run(
        [*base, "--url", secure_servers.tls_url, "--token-key", TOKEN_KEY, "--token-file", str(certs / "token"),
         QUESTION],
        capture_output=True, text=True, timeout=60)
    assert (tls.returncode, tls.stdout) == (0, plain_answer + "\n"), tls.stderr
