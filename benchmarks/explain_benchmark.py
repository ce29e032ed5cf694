"""SHAP benchmark: seconds per picture for EfficientNet-B7 at 224 with max_evals=300, vs plain forwards.

    .venv/bin/python benchmarks/explain_benchmark.py [--data ../shared/flipkart] [--images 3]

Exports an EfficientNet-B7 classifier (random weights: speed does not depend on them; 7 classes)
and explains real catalogue pictures through the same code as the ShapExplainer component
(``serving_pixels`` signature, ``inpaint_telea``, batches of 50). In the same run it times
``max_evals`` plain forward passes of the same model in the same batches: the target is explaining
<= 1.5 x that. It also prints how explaining time splits between masking (inpainting, in threads)
and the model.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def export_model(backbone: str, size: int, out: str) -> str:
    from placedemarche.components.trainer import backbones, export as export_lib, model as model_lib

    extractor, _ = backbones.build(backbone, size, "none", allow_random=True)
    head = model_lib.build_head(int(extractor.output_shape[-1]), 7, 256, 0.3, 0)
    labels = [f"category {i}" for i in range(7)]
    export_lib.export(export_lib.ImageClassifier(extractor, head, labels, size), out,
                      {"backbone": backbone, "image_size": size})
    return out


def pictures(data_dir: str, n: int):
    files = sorted(glob.glob(os.path.join(data_dir, "Images", "*.jpg")))
    if not files:
        from placedemarche.pipeline import sample_data

        tmp = tempfile.mkdtemp()
        sample_data.make_sample(tmp, per_class=2, seed=0, show_progress=False)
        files = sorted(glob.glob(os.path.join(tmp, "Images", "*.jpg")))
        print(f"no pictures in {data_dir}: using generated ones")
    return [Path(f).read_bytes() for f in files[:: max(1, len(files) // n)][:n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "flipkart"))
    parser.add_argument("--backbone", default="efficientnet_b7")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--max-evals", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--masker", default="inpaint_telea")
    args = parser.parse_args()

    import numpy as np

    from placedemarche.components.shap_explainer import explain

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = export_model(args.backbone, args.image_size, os.path.join(tmp, "model"))
        predict = explain.saved_model_predict(model_dir)
        images = [explain.decode(b, args.image_size) for b in pictures(args.data, args.images)]
        predict(np.stack(images[:1]).astype(np.float32))  # trace and warm up

        # Plain forward passes: max_evals pictures in the explainer's batch size, same model, same run.
        batch = np.repeat(images[0][None], args.batch_size, axis=0).astype(np.float32)
        start = time.perf_counter()
        done = 0
        while done < args.max_evals:
            n = min(args.batch_size, args.max_evals - done)
            predict(batch[:n])
            done += n
        forward = time.perf_counter() - start

        explainer = explain.Explainer(predict, args.image_size, [f"c{i}" for i in range(7)], masker=args.masker,
                                      max_evals=args.max_evals, batch_size=args.batch_size, top_k=3)
        explainer.explain(images[0])  # first call pays SHAP's one-off set-up (numba, partition tree)
        explainer.timings.__init__()
        gaps = []
        for i, image in enumerate(images, 1):
            result = explainer.explain(image)
            gaps.append(float(result.efficiency_gap().max()))
            print(f"picture {i}/{len(images)}: {result.seconds:.1f} s", flush=True)
        t = explainer.timings
        per_image = float(np.mean(t.per_image))
        report = {
            "backbone": args.backbone, "image_size": args.image_size, "max_evals": args.max_evals,
            "batch_size": args.batch_size, "masker": args.masker, "cpus": os.cpu_count(),
            "forward_seconds_for_max_evals": round(forward, 2),
            "explain_seconds_per_image": round(per_image, 2),
            "ratio_to_forward": round(per_image / forward, 3),
            "masked_images_per_picture": t.masked_images / len(images),
            "masking_seconds_per_image": round(t.masking / len(images), 2),
            "model_seconds_per_image": round(t.model / len(images), 2),
            "other_seconds_per_image": round((t.total - t.masking - t.model) / len(images), 2),
            "max_efficiency_gap": max(gaps),
        }
        print(json.dumps(report, indent=2))
        print(f"explaining: {per_image:.1f} s per picture = {per_image / forward:.2f} x {args.max_evals} plain "
              f"forward passes ({forward:.1f} s); target <= 1.5 x")


if __name__ == "__main__":
    main()
