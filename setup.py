"""Packaging for Dataflow and other remote workers: exactly the project's packages.

Workers install this with `--setup_file ./setup.py`; the versions come from
constraints.txt, which the install scripts pass to pip.
"""

import setuptools

setuptools.setup(
    name="beam-tft-preprocess",
    version="0.1.0",
    description="Preprocessing for ML with Apache Beam and tf.Transform",
    python_requires=">=3.10,<3.13",
    packages=["pipeline", "pipeline.workarounds", "transforms", "schemas", "trainer", "serving"],
    package_data={"schemas": ["*.yaml"]},
    install_requires=[
        # tensorflow-transform 1.21 was released and tested against Beam 2.72. Flink
        # and Spark need Beam's job-server jar of the very same version; no release
        # from 2.55 to 2.72 has one that this project's Maven registry serves, so
        # portability does not argue for another pin (scripts/fetch_job_server.sh).
        "apache-beam[gcp]==2.72.0",
        "tensorflow==2.21.0",
        "tensorflow-transform==1.21.0",
        "tfx-bsl==1.21.0",
        "pyarrow",
        "numpy",
        "pydantic>=2",
        "pyyaml",
        # Beam's TFRecord sink checksums with crcmod and warns on every run without it.
        "crcmod",
        # The trainer's summaries; TensorFlow no longer installs it.
        "tensorboard",
        # The online prediction service's HTTP server (serving/service.py).
        "aiohttp",
        # Intel ISA-L's deflate for the gzip-compressed TFRecords: four times
        # zlib's speed at its fastest level, about as small (transforms/tfrecords.py).
        "isal",
    ],
    # The command-line tools, installed with the package; each is also
    # `python -m <module>`.
    entry_points={
        "console_scripts": [
            "beam-tft-preprocess = pipeline.preprocess:main",
            "beam-tft-stream = pipeline.stream:main",
            "beam-tft-materialize = pipeline.materialize:main",
            "beam-tft-report = pipeline.report:main",
            "beam-tft-verify-skew = pipeline.verify_skew:main",
            "beam-tft-compare-runs = pipeline.compare_runs:main",
            "beam-tft-sample-data = pipeline.sample_data:main",
            "beam-tft-replay = pipeline.replay:main",
            "beam-tft-check-spec = schemas.spec:main",
            "beam-tft-infer-spec = schemas.infer:main",
            "beam-tft-train = trainer.task:main",
            "beam-tft-instances = trainer.instances:main",
            "beam-tft-predict = trainer.predict:main",
            "beam-tft-serve = serving.service:main",
        ]
    },
    # matplotlib draws the benchmark plot (benchmarks/run.py).
    # palmerpenguins ships a real table (NA values, a three-class string label,
    # no event time or key) that the tests walk through the whole path.
    extras_require={"dev": ["pytest", "ruff", "matplotlib", "hypothesis", "palmerpenguins"]},
)
