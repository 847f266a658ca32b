"""Host independence: what is compiled or cached for one CPU is not reused on another (docs/reliability.md)."""

from omnidrive_r1.disk_cache import cpu_isa_key, isolate_vllm_compile_cache


def test_vllm_compile_cache_is_kept_per_instruction_set(monkeypatch, tmp_path):
    monkeypatch.delenv("VLLM_CACHE_ROOT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR"):
        monkeypatch.delenv(name, raising=False)
    native = isolate_vllm_compile_cache()
    assert native.startswith(str(tmp_path / "vllm" / "cpu-")) and native == str(tmp_path / "vllm" / f"cpu-{cpu_isa_key()}")
    monkeypatch.delenv("VLLM_CACHE_ROOT")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # the imitated second machine compiles apart
    limited = isolate_vllm_compile_cache()
    assert limited != native
    monkeypatch.setenv("VLLM_CACHE_ROOT", "/somewhere/of/mine")  # the user's choice wins
    assert isolate_vllm_compile_cache() == "/somewhere/of/mine"
