"""Weights registry: manifest, resolution order, checksums, embedded copies, maintainer scripts.

No network: released models are served from temporary manifests, embedded folders and
hand-built Hugging Face cache folders (downloads are in test_hub_download.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from hub_server import manifest_entry, tiny_weights

import emmafuse
from emmafuse import hub, release, weights
from emmafuse.checkpoint import WeightsError, load_ufuser_file
from emmafuse.manifest import MANIFEST_ENV, ModelEntry, entry_problems, get_model, read_manifest
from emmafuse.weights import ChecksumMismatchError, NoPretrainedWeightsError

REPO = Path(__file__).resolve().parents[2]
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_weights(tmp_path_factory.mktemp("tiny") / "tiny.safetensors")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Isolated manifest + embedded folder + cache; any download attempt fails the test."""
    embedded = tmp_path / "pkg_weights"
    embedded.mkdir()
    monkeypatch.setattr(weights, "EMBEDDED_DIR", embedded)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unexpected download {args}")

    monkeypatch.setattr(hub, "download", no_download)

    class Env:
        root = tmp_path
        embedded_dir = embedded
        cache = tmp_path / "hf_cache"

        @staticmethod
        def manifest(models: dict, default: str | None = None) -> Path:
            path = tmp_path / "manifest.json"
            path.write_text(json.dumps({"schema": 1, "default": default, "models": models}))
            monkeypatch.setenv(MANIFEST_ENV, str(path))
            return path

    return Env


def fake_cache(cache: Path, repo_id: str, filename: str, data: bytes, commit: str = COMMIT, ref: str = "main") -> Path:
    """Lay out a Hugging Face cache entry the way hf_hub_download does (blob + snapshot symlink)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    (repo / "refs").mkdir()
    (repo / "refs" / ref).write_text(commit)
    pointer = repo / "snapshots" / commit / filename
    pointer.parent.mkdir(parents=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    return pointer


# --------------------------------------------------------------------------- shipped manifest
def test_shipped_manifest_is_valid_and_packaged_copy_identical() -> None:
    top = REPO / "weights_manifest.json"
    packaged = REPO / "src" / "emmafuse" / "weights_manifest.json"
    data = json.loads(top.read_text())
    assert release.validate_manifest(data) == []
    # the package's manifest (a symlink in the checkout) must be the same content
    assert packaged.read_bytes() == top.read_bytes()
    for name in ("emma-ivf", "emma-mif"):
        assert name in data["models"]


def test_pyproject_ships_manifest_and_embedded_weights() -> None:
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_data = data["tool"]["setuptools"]["package-data"]["emmafuse"]
    assert "weights_manifest.json" in package_data and "weights/*.safetensors" in package_data


def test_shipped_default_without_weights_raises_plain_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MANIFEST_ENV, raising=False)
    manifest = read_manifest()
    default = manifest.get("default")
    if default and get_model(default).available:
        pytest.skip("the default model has released weights in this build")
    with pytest.raises(NoPretrainedWeightsError, match="no pretrained weights are installed") as info:
        emmafuse.load(local_files_only=True)
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)
    assert all(m.available for m in emmafuse.list_models())


def test_unreleased_models_listed_only_on_request(env) -> None:
    unreleased = {"status": "unreleased", "repo_id": "org/ivf", "filename": "ivf.safetensors"}
    env.manifest({"emma-ivf": unreleased}, "emma-ivf")
    assert emmafuse.list_models() == []
    (entry,) = emmafuse.list_models(include_unreleased=True)
    assert entry.name == "emma-ivf" and not entry.available and entry.sha256 == ""
    with pytest.raises(NoPretrainedWeightsError, match="no pretrained weights"):
        emmafuse.load()
    with pytest.raises(NoPretrainedWeightsError, match="'emma-ivf' has no released weights"):
        emmafuse.load("emma-ivf")


def test_no_default_raises(env) -> None:
    env.manifest({}, None)
    with pytest.raises(NoPretrainedWeightsError):
        emmafuse.load()


def test_validate_manifest_reports_problems() -> None:
    bad = {
        "schema": 1,
        "default": "missing",
        "models": {
            "a": {"status": "released", "repo_id": "noslash", "filename": "a.safetensors", "sha256": "xyz"},
            "b": {"status": "weird", "repo_id": "o/b", "filename": "b.safetensors", "config": {"channels": [1, 2]}},
            "c": {"status": "unreleased", "repo_id": "o/c", "filename": "c.safetensors", "embedded": "../c.bin"},
        },
    }
    text = "\n".join(release.validate_manifest(bad))
    for needle in ("default 'missing'", "models.a.repo_id", "models.a.sha256", "models.a.size",
                   "embedded and/or published", "models.b.status", "models.b.config", "models.c.embedded"):
        assert needle in text


def test_the_schema_reads_and_writes_the_shipped_entries_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reader and writer are one schema: every shipped entry survives ModelEntry.from_dict -> to_dict."""
    monkeypatch.delenv(MANIFEST_ENV, raising=False)
    for name, raw in read_manifest()["models"].items():
        entry = ModelEntry.from_dict(name, raw)
        assert entry.to_dict() == raw and list(entry.to_dict()) == list(raw), name
        assert entry.extra == {}, f"{name}: fields the schema does not know: {sorted(entry.extra)}"


@pytest.mark.parametrize(
    "key, value",
    [("status", "weird"), ("description", 3), ("task", ["x"]), ("repo_id", "noslash"), ("revision", 7),
     ("filename", "dir/a.safetensors"), ("sha256", "xyz"), ("size", 0), ("size", True), ("embedded", "a.bin"),
     ("published", "yes"), ("config", {"channels": [1]}), ("training", []), ("license", 1), ("evaluation", "good")],
)
def test_the_validator_checks_every_field_of_the_schema(tiny_bytes: bytes, key: str, value: object) -> None:
    entry = manifest_entry(tiny_bytes)
    assert entry_problems("m", entry) == []
    entry[key] = value
    problems = entry_problems("m", entry)
    assert len(problems) == 1 and problems[0].startswith(f"m.{key}: "), problems


def test_every_schema_field_has_a_rule_the_validator_reads() -> None:
    fields = [f for f in dataclasses.fields(ModelEntry) if f.name not in ("name", "extra")]
    assert {f.name for f in fields} == set(manifest_entry(b"x")) | {"task"}
    assert all({"doc", "check", "required", "released"} <= set(f.metadata) for f in fields)


def test_release_registers_an_entry_that_validates(tmp_path: Path, tiny_bytes: bytes) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(tiny_bytes)
    _, config, meta = load_ufuser_file(path)
    reg = release.Registration(name="tiny", file=path, config=config, filename="w.safetensors", embedded=True,
                               metadata=meta, repo_id="org/tiny", training={"data": "synthetic"})
    manifest: dict = {"schema": 1, "default": None, "models": {}}
    entry = release.register(manifest, reg, default=True)
    assert manifest["default"] == "tiny" and release.validate_manifest(manifest) == []
    assert entry.sha256 == hashlib.sha256(tiny_bytes).hexdigest() and entry.size == len(tiny_bytes)
    assert manifest["models"]["tiny"] == entry.to_dict() and entry.training["data"] == "synthetic"
    with pytest.raises(release.ReleaseError, match="repository") as info:
        release.register(manifest, dataclasses.replace(reg, name="new", repo_id=None))
    assert info.value.parameter == "repo_id" and "new" not in manifest["models"]
    with pytest.raises(release.ReleaseError, match="models.bad.filename"):
        release.register(manifest, dataclasses.replace(reg, name="bad", filename="w.bin"))
    assert "bad" not in manifest["models"]


def test_atomic_write_follows_the_umask_of_the_moment(tmp_path: Path) -> None:
    """The umask is not read once at import (that meant setting it, racing other threads)."""
    from emmafuse._fs import atomic_write

    before = os.umask(0o077)
    try:
        written = atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(before)
    assert written.stat().st_mode & 0o777 == 0o600 and written.read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


# --------------------------------------------------------------------------- explicit paths
def test_explicit_path_loads_with_sha(tmp_path: Path, tiny_bytes: bytes) -> None:
    path = tmp_path / "mine.safetensors"
    path.write_bytes(tiny_bytes)
    fuser = emmafuse.load(path, device="cpu")
    assert fuser.info["source"] == "path"
    assert fuser.info["sha256"] == hashlib.sha256(tiny_bytes).hexdigest()
    assert emmafuse.load(str(path), device="cpu").info["path"] == str(path)


def test_missing_path_and_pickle_path(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        emmafuse.load(tmp_path / "nope.safetensors")
    pth = tmp_path / "EMMA.pth"
    torch.save({"w": torch.zeros(1)}, pth)
    with pytest.raises(WeightsError, match="emmafuse convert"):
        emmafuse.load(pth)


def test_unknown_name(env) -> None:
    env.manifest({})
    with pytest.raises(WeightsError, match="unknown model 'nonesuch'"):
        emmafuse.load("nonesuch")


# --------------------------------------------------------------------------- embedded copy
def test_embedded_fp16_copy_is_upcast(env, tmp_path: Path) -> None:
    ref = tmp_path / "ref.safetensors"
    tiny_weights(ref, seed=3)
    half = tiny_weights(env.embedded_dir / "tiny.safetensors", seed=3, dtype=torch.float16)
    env.manifest({"tiny": manifest_entry(half, embedded="tiny.safetensors", published=False)}, "tiny")
    assert [m.name for m in emmafuse.list_models()] == ["tiny"]

    fuser = emmafuse.load(device="cpu")
    assert fuser.info["source"] == "embedded" and fuser.info["name"] == "tiny"
    ref_state, _, _ = load_ufuser_file(ref)
    for key, value in fuser.model.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, ref_state[key], atol=2e-3, rtol=1e-3)


def test_embedded_checksum_mismatch_is_refused(env, tiny_bytes: bytes) -> None:
    (env.embedded_dir / "tiny.safetensors").write_bytes(tiny_bytes)
    entry = manifest_entry(tiny_bytes, embedded="tiny.safetensors", published=False, sha256="0" * 64)
    env.manifest({"tiny": entry})
    with pytest.raises(WeightsError, match="sha256") as info:
        emmafuse.load("tiny")
    assert "skipped" in str(info.value)


def test_embedded_missing_file_is_reported(env, tiny_bytes: bytes) -> None:
    env.manifest({"tiny": manifest_entry(tiny_bytes, embedded="tiny.safetensors", published=False)})
    with pytest.raises(WeightsError, match="missing from this installation"):
        emmafuse.load("tiny")


def test_truncated_embedded_copy_size_check(env, tiny_bytes: bytes) -> None:
    (env.embedded_dir / "tiny.safetensors").write_bytes(tiny_bytes[:1000])
    env.manifest({"tiny": manifest_entry(tiny_bytes, embedded="tiny.safetensors", published=False)})
    with pytest.raises(ChecksumMismatchError, match="size 1000 bytes"):
        weights.locate_weights("tiny")


# --------------------------------------------------------------------------- HF cache, offline
def test_hf_cache_is_used_first_without_network(env, tiny_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    pointer = fake_cache(env.cache, "org/tiny", "tiny.safetensors", tiny_bytes)
    (env.embedded_dir / "tiny.safetensors").write_bytes(tiny_bytes)
    env.manifest({"tiny": manifest_entry(tiny_bytes, embedded="tiny.safetensors")})
    found = weights.locate_weights("tiny", cache_dir=env.cache)
    assert found.source == "cache" and found.path == pointer
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights.locate_weights("tiny", cache_dir=env.cache).source == "cache"


def test_corrupt_cache_entry_is_deleted_and_not_used(env, tiny_bytes: bytes) -> None:
    bad = bytearray(tiny_bytes)
    bad[-1] ^= 0xFF
    pointer = fake_cache(env.cache, "org/tiny", "tiny.safetensors", bytes(bad))
    blob = Path(os.path.realpath(pointer))
    (env.embedded_dir / "tiny.safetensors").write_bytes(tiny_bytes)
    env.manifest({"tiny": manifest_entry(tiny_bytes, embedded="tiny.safetensors")})
    found = weights.locate_weights("tiny", cache_dir=env.cache)
    assert found.source == "embedded"
    assert not pointer.exists() and not pointer.is_symlink() and not blob.exists()


def test_offline_not_cached_is_clear(env, tiny_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    env.manifest({"tiny": manifest_entry(tiny_bytes)})
    with pytest.raises(WeightsError, match="local_files_only=True"):
        emmafuse.load("tiny", cache_dir=env.cache, local_files_only=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE") as info:
        emmafuse.load("tiny", cache_dir=env.cache)
    assert "org/tiny/tiny.safetensors" in str(info.value)


def test_other_revision_skips_embedded_and_checks_hub_sha(env, tiny_bytes: bytes) -> None:
    other = "f" * 40
    fake_cache(env.cache, "org/tiny", "tiny.safetensors", tiny_bytes, commit=other, ref="v2")
    (env.embedded_dir / "tiny.safetensors").write_bytes(tiny_bytes)
    env.manifest({"tiny": manifest_entry(tiny_bytes, embedded="tiny.safetensors", sha256="1" * 64)})
    with pytest.warns(UserWarning, match="not pinned"):
        found = weights.locate_weights("tiny", revision="v2", cache_dir=env.cache)
    assert found.source == "cache" and found.revision == "v2"


# --------------------------------------------------------------------------- hashing cache
def test_sha256_computed_once_per_file_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = weights._hash_file
    monkeypatch.setattr(weights, "_hash_file", lambda p: calls.append(p) or real(p))
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    assert weights.verify_file(path, digest, 3) == digest
    assert weights.verify_file(path, digest, 3) == digest
    assert len(calls) == 1
    path.write_bytes(b"abd")
    os.utime(path, ns=(1, 1))  # a new mtime even on coarse-clock file systems
    with pytest.raises(ChecksumMismatchError):
        weights.verify_file(path, digest, 3)
    assert len(calls) == 2


# --------------------------------------------------------------------------- maintainer scripts
def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_emmafuse_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_register_weights_embeds_fp16_and_updates_manifest(
    env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = tmp_path / "final.safetensors"
    tiny_weights(trained, seed=5)
    real_manifest = tmp_path / "real_manifest.json"
    real_manifest.write_text((REPO / "weights_manifest.json").read_text())
    link = tmp_path / "pkg_manifest.json"
    link.symlink_to(real_manifest)
    register = _script("register_weights")
    argv = [str(trained), "--name", "emma-ivf", "--embed", "--fp16", "--default", "--license", "mit",
            "--training-data", "synthetic test", "--manifest", str(link), "--weights-dir", str(env.embedded_dir)]
    assert register.main(argv) == 0
    assert link.is_symlink(), "the manifest symlink must survive the update"
    data = json.loads(real_manifest.read_text())
    assert release.validate_manifest(data) == []
    entry = data["models"]["emma-ivf"]
    stored = env.embedded_dir / "emma-ivf.safetensors"
    assert entry["embedded"] == "emma-ivf.safetensors" and data["default"] == "emma-ivf"
    assert entry["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert entry["size"] == stored.stat().st_size < trained.stat().st_size  # float16 storage
    assert entry["config"]["channels"] == [8, 8, 8, 8] and entry["published"] is False
    assert entry["training"]["data"] == "synthetic test"
    # registering the same weights again (e.g. to add evaluation numbers) keeps the shipped bytes
    first = stored.read_bytes()
    assert register.main([*argv, "--training-data", "again"]) == 0
    assert stored.read_bytes() == first and not list(env.embedded_dir.glob("*.new"))
    assert json.loads(real_manifest.read_text())["models"]["emma-ivf"]["sha256"] == entry["sha256"]

    monkeypatch.setenv(MANIFEST_ENV, str(link))
    fuser = emmafuse.load(device="cpu")
    assert fuser.info["source"] == "embedded" and fuser.info["name"] == "emma-ivf"


def test_register_weights_rejects_bad_file(env, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    manifest = env.manifest({})
    register = _script("register_weights")
    assert register.main([str(bad), "--name", "x", "--repo-id", "o/x", "--manifest", str(manifest)]) == 2
    assert json.loads(manifest.read_text())["models"] == {}


def test_publish_prepares_folder_with_card(env, tmp_path: Path, tiny_bytes: bytes) -> None:
    (env.embedded_dir / "tiny.safetensors").write_bytes(tiny_bytes)
    entry = manifest_entry(tiny_bytes, embedded="tiny.safetensors", published=False, task="infrared-visible fusion")
    manifest = env.manifest({"tiny": entry})
    publish = _script("publish")
    out = tmp_path / "hub_folder"
    publish.prepare_folder("tiny", out, manifest_path=manifest, weights_dir=env.embedded_dir)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "tiny.safetensors"]
    assert (out / "tiny.safetensors").read_bytes() == tiny_bytes
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\nlibrary_name: emmafuse\n")
    assert "- infrared-visible-fusion" in card and "{{" not in card
    assert "not yet measured" in card and entry["sha256"] in card
    assert json.loads((out / "config.json").read_text())["channels"] == [8, 8, 8, 8]

    entry["evaluation"] = {"protocol": "MSRS test, 361 pairs", "results": {"MSRS": {"EN": 6.71234, "SSIM": 0.5}}}
    manifest = env.manifest({"tiny": entry})
    publish.prepare_folder("tiny", out, manifest_path=manifest, weights_dir=env.embedded_dir)
    card = (out / "README.md").read_text()
    assert "| MSRS | 6.712 | not yet measured" in card and "MSRS test, 361 pairs" in card


def test_publish_refuses_wrong_file(env, tmp_path: Path, tiny_bytes: bytes) -> None:
    other = tmp_path / "other.safetensors"
    tiny_weights(other, seed=9)
    manifest = env.manifest({"tiny": manifest_entry(tiny_bytes, published=False, embedded="tiny.safetensors")})
    publish = _script("publish")
    with pytest.raises(publish.PublishError, match="not the file registered"):
        publish.prepare_folder("tiny", tmp_path / "out", manifest_path=manifest, weights_file=other)
    assert publish.main(["--name", "tiny", "--file", str(other), "--manifest", str(manifest),
                         "--out", str(tmp_path / "out")]) == 2
