"""`transport-informer pki init` and `clusters add/list/remove`, as an operator runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from app.pki.authority import common_name
from app.pki.tokens import TOKEN_PATTERN, bundle_pin

pytestmark = pytest.mark.timeout(120)


def cli(
    *args: str, database: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"TI_DATABASE_URL": database} if database else {})}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def test_pki_init_makes_the_ca_the_broker_and_the_hub_and_never_overwrites(tmp_path: Path) -> None:
    made = cli("pki", "init", "--dir", str(tmp_path / "pki"), "--broker-host", "mosquitto")
    assert made.returncode == 0, made.stderr
    names = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "pki").iterdir()}
    assert names == {
        "ca.crt": "0o644",
        "ca.key": "0o600",
        "broker.crt": "0o644",
        "broker.key": "0o600",
        "hub.crt": "0o644",
        "hub.key": "0o600",
        "crl.pem": "0o644",
    }
    broker = x509.load_pem_x509_certificate((tmp_path / "pki" / "broker.crt").read_bytes())
    hub = x509.load_pem_x509_certificate((tmp_path / "pki" / "hub.crt").read_bytes())
    assert common_name(hub.subject) == "hub.transport-informer"
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["mosquitto"]
    again = cli("pki", "init", "--dir", str(tmp_path / "pki"))
    assert again.returncode == 1 and "already holds a CA" in again.stderr


def test_clusters_add_list_remove(tmp_path: Path) -> None:
    assert cli("pki", "init", "--dir", str(tmp_path / "pki")).returncode == 0
    db = f"sqlite:///{tmp_path}/hub.db"
    pki = ("--pki-dir", str(tmp_path / "pki"))
    added = cli("clusters", "add", "prod-1", "--labels", "env=prod,region=eu", *pki, database=db)
    assert added.returncode == 0, added.stderr
    token = re.search(r"^  (\S+\.\S+)$", added.stdout, re.M)
    assert token and TOKEN_PATTERN.match(token.group(1)), added.stdout
    pin = bundle_pin((tmp_path / "pki" / "ca.crt").read_bytes())
    assert token.group(1).endswith("." + pin)
    assert (
        "transport-informer agent --cluster prod-1 --join https://127.0.0.1:8000 --token "
        f"{token.group(1)} --state-dir /var/lib/transport-informer"
    ) in added.stdout

    twice = cli("clusters", "add", "prod-1", *pki, database=db)
    assert twice.returncode == 1 and "--new-token" in twice.stderr
    assert cli("clusters", "add", "prod-1", "--exist-ok", *pki, database=db).returncode == 0
    token_file = tmp_path / "prod-1.token"
    renewed = cli(
        "clusters",
        "add",
        "prod-1",
        "--new-token",
        "--token-file",
        str(token_file),
        *pki,
        database=db,
    )
    assert renewed.returncode == 0, renewed.stderr
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert token_file.read_text().strip() not in renewed.stdout
    no_pki = cli("clusters", "add", "prod-2", database=db)
    assert no_pki.returncode == 1 and "--pki-dir" in no_pki.stderr
    bad = cli("clusters", "add", "Prod_2", *pki, database=db)
    assert bad.returncode == 1 and "must be 1-63 characters" in bad.stderr

    listed = cli("clusters", "list", database=db)
    assert re.search(r"^prod-1\s+env=prod,region=eu\s+pending\s+-$", listed.stdout, re.M), (
        listed.stdout
    )
    removed = cli("clusters", "remove", "prod-1", database=db)
    assert removed.returncode == 0 and "deletes its inventory" in removed.stdout
    gone = cli("clusters", "remove", "prod-1", database=db)
    assert gone.returncode == 1 and "not registered" in gone.stderr
    assert "prod-1" not in cli("clusters", "list", database=db).stdout
