"""``workload set`` (overwrite, --cas) and ``workload list --values --json`` on the mocked Consul,
through the real argument parser."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from voltha_gevent import admin
from voltha_gevent.cli_parser import build_parser
from voltha_gevent.config import Config
from voltha_gevent.consul_api import ConsulAPI
from voltha_gevent.keys import Keys
from voltha_gevent.testing.fake_consul import FakeConsul, ManualClock

PREFIX = "service/voltha"
KEYS = Keys(PREFIX)
CONFIG = Config.load(environ={"VOLTHA_PREFIX": PREFIX, "VOLTHA_CONSUL": "127.0.0.1:8500"})


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConsulAPI]:
    with FakeConsul(clock=ManualClock()) as fake:
        monkeypatch.setattr(admin, "make_client", lambda settings, timeout: fake.client())
        yield ConsulAPI(fake.client())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = admin.dispatch(CONFIG, build_parser().parse_args(list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


def index_of(api: ConsulAPI, item: str) -> int:
    entry = api.get(KEYS.item(item))[1]
    assert entry is not None
    return entry.modify_index


def test_set_overwrites_an_existing_item_and_says_its_new_index(capsys, api):
    api.put(KEYS.item("olt1"), b"old")
    code, out, err = run(capsys, "workload", "set", "olt1", "--value", '{"ip": "10.0.0.8"}')
    assert (code, err) == (0, "")
    assert api.get(KEYS.item("olt1"))[1].value == b'{"ip": "10.0.0.8"}'
    assert out == f"set     olt1 (index {index_of(api, 'olt1')})\n"


def test_set_never_creates_an_item(capsys, api):
    code, out, err = run(capsys, "workload", "set", "ghost", "--value", "x")
    assert (code, out) == (1, "")
    assert err == "voltha-gevent: not in the workload: ghost (workload add creates items)\n"
    assert api.get(KEYS.item("ghost"))[1] is None


def test_set_with_cas_writes_only_at_that_index(capsys, api):
    api.put(KEYS.item("olt1"), b"v1")
    seen = index_of(api, "olt1")
    code, _, err = run(capsys, "workload", "set", "olt1", "--value", "v2", "--cas", str(seen))
    assert code == 0, err
    now = index_of(api, "olt1")
    assert now > seen
    code, out, err = run(capsys, "workload", "set", "olt1", "--value", "v3", "--cas", str(seen))
    assert (code, out) == (1, "")
    assert err == f"voltha-gevent: olt1 changed since index {seen} (it is at index {now}); nothing written\n"
    assert api.get(KEYS.item("olt1"))[1].value == b"v2"
    code, _, err = run(capsys, "workload", "set", "new", "--value", "n", "--cas", "0")  # Consul: create only
    assert code == 0 and api.get(KEYS.item("new"))[1].value == b"n"
    code, _, err = run(capsys, "workload", "set", "new", "--value", "again", "--cas", "0")
    assert code == 1 and "changed since index 0" in err


def test_set_from_a_file_and_bad_input_exit_2(capsys, api, tmp_path):
    api.put(KEYS.item("olt1"), b"v1")
    source = tmp_path / "value.bin"
    source.write_bytes(b"\xff\x00binary")
    code, _, err = run(capsys, "workload", "set", "olt1", "--value-file", str(source))
    assert code == 0, err
    assert api.get(KEYS.item("olt1"))[1].value == b"\xff\x00binary"
    code, _, err = run(capsys, "workload", "set", "bad/name", "--value", "x")
    assert code == 2 and "invalid item name(s): 'bad/name'" in err
    with pytest.raises(SystemExit):  # a value is required: argparse exits 2
        build_parser().parse_args(["workload", "set", "olt1"])


def test_list_values_json_has_text_or_base64_and_the_indexes_for_cas(capsys, api):
    api.put(KEYS.item("b"), b'{"ip": "10.0.0.7"}')
    api.put(KEYS.item("a"), b"")
    api.put(KEYS.item("c"), b"\xff\xfe")
    api.put(KEYS.item("nested/x"), b"not an item")
    code, out, err = run(capsys, "workload", "list", "--values", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["item"] for r in rows] == ["a", "b", "c"]
    assert rows[0] == {"item": "a", "modify_index": index_of(api, "a"), "value": ""}
    assert rows[1]["value"] == '{"ip": "10.0.0.7"}' and rows[1]["modify_index"] == index_of(api, "b")
    assert rows[2]["value"] is None and rows[2]["value_base64"] == "//4="
    code, out, _ = run(capsys, "workload", "list", "--values")
    assert out.splitlines()[1] == f'b  {index_of(api, "b")}  {{"ip": "10.0.0.7"}}'
    code, out, _ = run(capsys, "workload", "list", "--json")
    assert json.loads(out) == ["a", "b", "c"]
    code, out, _ = run(capsys, "workload", "list")
    assert out.split() == ["a", "b", "c"]
