"""Place de Marche product-photo categorisation: a TFX pipeline, its components and serving tools.

The dependency set is pinned in requirements-lock.txt (installed by scripts/install.sh); the
requirements below are the direct ones, loose enough not to fight the lock.
"""

from setuptools import find_packages, setup

setup(
    name="placedemarche",
    version="0.1.0",
    description="Product categories from product photos: TFX pipeline, EfficientNet-B7 vs VGG19, "
    "TF Serving, SHAP explanations",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*",
                                    "serving", "serving.*"]),
    package_data={"pipeline": ["schema/*.pbtxt"]},
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
    ],
    extras_require={"test": ["pytest==8.3.3"]},
    entry_points={"console_scripts": ["placedemarche=pipeline.cli:main"]},
)
