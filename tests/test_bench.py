"""bench.py runs end to end (tiny sizes, CPU): every measurement of the GPU report exists and is sane."""

import bench


def test_bench_runs_every_measurement_on_small_inputs(capsys):
    argv = ["--device", "cpu", "--models", "unet", "--slices", "4", "--size", "64", "48"]
    results = bench.main([*argv, "--workers", "0", "--reps", "1", "--steps", "2", "--profile"])
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
    assert fast["profile_training"]["top"] and "profile_training" not in base  # only the fast path is profiled
    assert "targets" not in results  # issue 17's targets are for full-size volumes only
    out = capsys.readouterr().out
    assert "| model | mode | ms_per_volume" in out and "unet training: " in out and "| kernel | kind |" in out


def test_cache_key_cost_is_measured():
    costs = bench.main(["--cache-key", "--device", "cpu", "--slices", "4", "--size", "32", "16", "--reps", "2"])
    assert set(costs["cache_key"]) == {"key_ms", "old_key_ms", "content_hash_ms", "decode_ms"}
    assert all(v > 0 for v in costs["cache_key"].values())


def test_profile_names_the_top_kernels_and_the_convolution_share():
    argv = ["--device", "cpu", "--models", "unet", "--slices", "4", "--size", "64", "48", "--quick", "--reps", "1"]
    fast = bench.main([*argv, "--profile"])["rows"][1]
    prof = fast["profile_inference"]
    assert prof["top"] and all(k["name"].startswith("aten::") for k in prof["top"])  # operators, not Python ranges
    assert sum(k["share"] for k in prof["top"]) <= 1 + 1e-9
    assert prof["conv_share"] + prof["memory_share"] == 1 and prof["conv_share"] > 0.2  # a U-Net is mostly convs
    assert prof["top"][0]["kind"] == "conv" and "profile_training" not in fast  # --quick: inference only


def test_kernel_kinds_and_targets_by_hand():
    conv = [
        "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64",
        "sm90_xmma_dgrad_implicit_gemm_indexed_bf16",
        "void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_64x1_nn_align8>",
        "aten::mkldnn_convolution",
        "aten::convolution_backward",
        "aten::addmm",
        "triton_tem_fused_convolution_0",
    ]
    memory = [
        "void cudnn::ops::nchwToNhwcKernel<__nv_bfloat16, __nv_bfloat16, float, false, true>",
        "triton_poi_fused__native_batch_norm_legit_no_training_relu_0",
        "void at::native::elementwise_kernel<128, 2>",
        "Memcpy HtoD (Pinned -> Device)",
        "aten::native_batch_norm",
        "aten::copy_",
        "triton_poi_fused_convolution_relu_3",
        "triton_red_fused__native_batch_norm_legit_functional_convolution_7",
        "cpp_fused_convolution_0",
    ]
    assert [bench.kernel_kind(k) for k in conv] == ["conv"] * len(conv)
    assert [bench.kernel_kind(k) for k in memory] == ["memory"] * len(memory)
    row = {
        "model": "unet",
        "ms_per_volume": 41.0,
        "train_images_per_s": 800.0,
        "train_data_wait_fraction": 0.05,
        "test_py_s_per_volume": 0.5,
    }
    assert bench.check_targets(row) == [
        "unet ms_per_volume = 41 (target <= 40): MISSED",
        "unet train_images_per_s = 800 (target >= 700): met",
        "unet train_data_wait_fraction = 0.05 (target < 0.05): MISSED",
        "unet test_py_s_per_volume = 0.5 (target <= 0.5): met",
    ]
    assert bench.check_targets({"model": "unet_nested_dilated", "ms_per_volume": 500.0}) == []


def test_resumed_training_is_timed_with_denormals_kept_and_flushed(capsys):
    """Each row in its own process (the flag reaches only threads started after it); the shipped DRIVE checkpoint
    has no optimiser state, so its optimiser starts fresh."""
    from tasks.vessel import VesselTask

    results = bench.main(["--resumed", str(VesselTask.shipped_checkpoint), "--steps", "1", "--batch", "2"])
    kept, flushed = results["resumed_training"]
    assert (kept["denormals"], flushed["denormals"]) == ("kept", "flushed")
    assert kept["crop_size"] == flushed["crop_size"] == 128  # the checkpoint's own patch size
    assert kept["images_per_s"] > 0 and flushed["speedup"] == flushed["images_per_s"] / kept["images_per_s"]
    assert '"denormals": "flushed"' in capsys.readouterr().out
