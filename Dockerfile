# A custom SDK container for Dataflow, Flink and Spark workers: Beam's Python 3.11 SDK image with this project
# (code and shipped model) installed, so workers start without installing anything.
# Not built by this project's CI (no Docker engine there). Build and push it where Docker runs:
#   docker build -t REGISTRY/fashion-scorer:0.1.0 . && docker push REGISTRY/fashion-scorer:0.1.0
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/fashion-scorer
COPY setup.py MANIFEST.in README.md constraints.txt ./
COPY model/ model/
COPY pipeline/ pipeline/
# The constraints pin the versions the tests ran with, including the image's own apache-beam 2.77.0.
RUN pip install --no-cache-dir -c constraints.txt '.[gcp,aws]'

# The SDK image's entrypoint (/opt/apache/beam/boot) is kept: runners start workers through it.
