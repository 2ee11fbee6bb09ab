"""bench.py runs end to end (tiny sizes, CPU): every measurement of the GPU report exists and is sane."""

import bench


def test_bench_runs_every_measurement_on_small_inputs(capsys):
    argv = ["--device", "cpu", "--models", "unet", "--slices", "4", "--size", "64", "48"]
    results = bench.main([*argv, "--workers", "0", "--reps", "1", "--steps", "2"])
    base, fast = results["rows"]
    assert (base["mode"], fast["mode"]) == ("baseline", "fast")
    for row in (base, fast):
        assert row["ms_per_volume"] > 0 and row["ms_per_slice"] * 4 == row["ms_per_volume"]
        assert row["train_images_per_s"] > 0 and 0 <= row["train_data_wait_fraction"] <= 1
        assert row["test_py_s_per_volume"] > 0 and row["gflops_per_volume"] > 0
    assert base["inference_speedup"] == 1.0 and fast["test_py_speedup"] > 0
    assert fast["test_py_eager_s_per_volume"] > 0 and "test_py_eager_s_per_volume" not in base
    assert results["data_pipeline"]["images_per_s"] > 0
    assert results["data_pipeline_oct_augmentation"]["images_per_s"] > 0
    assert "| model | mode | ms_per_volume" in capsys.readouterr().out


def test_cache_key_cost_is_measured():
    costs = bench.main(["--cache-key", "--device", "cpu", "--slices", "4", "--size", "32", "16", "--reps", "2"])
    assert set(costs["cache_key"]) == {"key_ms", "old_key_ms", "content_hash_ms", "decode_ms"}
    assert all(v > 0 for v in costs["cache_key"].values())
