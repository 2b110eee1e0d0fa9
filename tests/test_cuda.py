"""The CUDA paths (bf16 autocast, deferred cuDNN autotuning, GPU-side blending and class map) on a real GPU.

CI has no GPU, so these run where ``torch.cuda.is_available()``: on a workstation
or the lent H100 (``python -m pytest tests/test_cuda.py``). Everything they check
on the GPU is also covered on CPU by the other test modules.
"""

import numpy as np
import pytest
import torch

from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import InferenceConfig, ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.encoding import mask_to_annotation
from napari_sparseseg.core.events import TrainStep
from napari_sparseseg.core.session import SegmentationSession

from .conftest import sphere_volume

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")

SMALL = ModelConfig(base_channels=8, depth=3)


def _session(device: str, amp: bool = True, seed: int = 0) -> tuple[SegmentationSession, np.ndarray]:
    image, mask = sphere_volume((24, 48, 48), radius=9.0)
    annotation = np.zeros_like(mask)
    annotation[12] = mask_to_annotation(mask[12])
    config = SessionConfig(model=SMALL, device=device,
                           train=TrainConfig(patch_voxels=16 * 32 * 32, batch_size=2, amp=amp, seed=seed),
                           inference=InferenceConfig(batch_size=2))
    return SegmentationSession(image, num_classes=1, spacing=(1.0, 1.0, 1.0), annotation=annotation,
                               config=config), mask


def test_training_on_the_gpu_uses_bf16_and_learns_the_sphere():
    s, mask = _session("cuda")
    assert s.trainer.device.type == "cuda" and s.trainer.amp
    torch.backends.cudnn.benchmark = False
    steps = [e for e in s.train(max_steps=150) if isinstance(e, TrainStep)]
    assert torch.backends.cudnn.benchmark  # autotuning switched on after the first steps
    assert len(steps) == 150 and all(np.isfinite(e.loss) for e in steps)
    assert np.mean([e.loss for e in steps[-10:]]) < np.mean([e.loss for e in steps[:10]])
    seg = s.segment()
    inter = np.logical_and(seg == 1, mask == 1).sum()
    dice = 2 * inter / ((seg == 1).sum() + (mask == 1).sum())
    assert dice > 0.8, dice


def test_gpu_inference_matches_cpu_inference_of_the_same_weights():
    s, _ = _session("cuda", amp=False)
    list(s.train(max_steps=5))
    gpu = s.predict()
    cpu_session, _ = _session("cpu", amp=False)
    cpu_session.trainer.load_state_dict(s.trainer.state_dict())
    cpu = cpu_session.predict()
    # TF32 convolutions on the GPU: agreement to ~1e-3, not bitwise
    np.testing.assert_allclose(gpu.probabilities, cpu.probabilities, atol=5e-3)
    assert (gpu.labels != cpu.labels).mean() < 1e-3


def test_a_box_on_the_gpu_equals_the_crop_of_the_whole_volume():
    s, _ = _session("cuda", amp=False)
    list(s.train(max_steps=5))
    whole = s.predict()
    box = Box((10, 5, 7), (14, 40, 33))
    part = s.predict(box)
    np.testing.assert_allclose(part.probabilities, whole.probabilities[(slice(None), *box.slices)], atol=1e-4)


def test_the_trainer_frees_gpu_memory_between_sessions():
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    s, _ = _session("cuda")
    list(s.train(max_steps=3))
    del s
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    assert torch.cuda.memory_allocated() - before < 16 * 2**20


def test_batches_are_built_ahead_on_the_gpu_and_a_correction_still_reaches_the_next_step():
    s, mask = _session("cuda")
    assert s.trainer.prefetching  # TrainConfig.prefetch "auto" is on for CUDA
    steps = [e for e in s.train(max_steps=10) if isinstance(e, TrainStep)]
    assert s.trainer.batches.built_ahead == (9, 1) and all(np.isfinite(e.loss) for e in steps)
    before = s.volume.revision
    s.add_correction((4, slice(None), slice(None)), 1)
    step = next(e for e in s.train(max_steps=1) if isinstance(e, TrainStep))
    assert step.revision == s.volume.revision > before
    s.trainer.close()
