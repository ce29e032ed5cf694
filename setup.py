"""Place de Marche product categorisation: a TFX pipeline, its components and serving tools.

One installed import package, ``placedemarche``, mapped onto the repository's top-level folders:
``placedemarche.pipeline`` is ``pipeline/``, ``placedemarche.components`` is ``components/`` and
``placedemarche.serving`` is ``serving/``. The folders keep their short names in the tree; the
installed names cannot clash with other projects' generic ``pipeline`` / ``components`` / ``serving``
packages (TFX's own templates install a top-level ``pipeline``), and every logger of the project is
under ``placedemarche``.

The dependency set is pinned in requirements-lock.txt (installed by scripts/install.sh); the
requirements below are the direct ones, loose enough not to fight the lock.
"""

from setuptools import find_packages, setup

FOLDERS = ("pipeline", "components", "serving")
ROOT = "placedemarche"

setup(
    name="placedemarche",
    version="0.2.0",
    description="Product categories from product photos and listing text: TFX pipeline, EfficientNet-B7 "
    "candidates vs VGG19, TF Serving, SHAP explanations",
    python_requires=">=3.10,<3.11",
    packages=[f"{ROOT}.{p}" for p in find_packages(include=[f for folder in FOLDERS for f in (folder, f"{folder}.*")])],
    package_dir={f"{ROOT}.{folder}": folder for folder in FOLDERS},
    package_data={f"{ROOT}.pipeline": ["schema/*.pbtxt"]},
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tensorflow-data-validation==1.16.1",
        "tensorflow-model-analysis==0.47.1",
        "tensorflow-serving-api==2.16.1",
        "apache-beam[gcp]==2.59.0",
        "kfp==2.5.0",
        "shap==0.49.1",
        "pandas==1.5.3",
        "pillow==10.4.0",
        "opencv-python-headless==4.10.0.84",
        "matplotlib==3.9.2",
        "PyYAML>=6",
        "tqdm>=4.60",
        "keras-tuner==1.4.7",  # the Tuner nodes (also a TFX dependency)
    ],
    extras_require={"test": ["pytest==8.3.3"]},
    entry_points={"console_scripts": ["placedemarche=placedemarche.pipeline.cli:main"]},
)
