"""Fetches what a loopback cluster runs into a cache: Beam's job-server class path from Maven, the engine's runtime
from PyPI, and the loopback-bind library compiled from its source; each once, each published by one rename."""

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

# Maven Central serves Beam's runner modules for Spark 3 and Flink 1.19 at 2.70.0 only, and Beam's job-service module
# at 2.65.0 only; the job-server jars (beam-runners-*-job-server) at no version (docs/cluster.md, "Which Beam").
# The job server is the runner module, its dependencies and the job service: Beam's own job-server jar is those
# shaded into one file.
BEAM_RUNNER_VERSION = "2.70.0"
JOB_SERVICE_VERSION = "2.65.0"
CACHE_ENV = "FASHION_CLUSTER_CACHE"
SHIM_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loopback_bind.c")

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>fashion-scorer.cluster</groupId><artifactId>{artifact}-job-server</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId><artifactId>{artifact}</artifactId><version>{runner_version}</version>
      <exclusions><exclusion>
        <groupId>org.apache.beam</groupId><artifactId>beam-runners-java-job-service</artifactId>
      </exclusion></exclusions>
    </dependency>
    <!-- Only its own classes: everything it needs comes at the runner's version above. -->
    <dependency>
      <groupId>org.apache.beam</groupId><artifactId>beam-runners-java-job-service</artifactId>
      <version>{job_service_version}</version>
      <exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>
    </dependency>
{extra}  </dependencies>
</project>
"""
# Flink's job server logs through SLF4J and ships no binding (Spark's runtime brings its own).
SLF4J_SIMPLE = """    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>2.0.16</version>
    </dependency>
"""


@dataclasses.dataclass(frozen=True)
class Engine:
    name: str
    runner_artifact: str  # Beam's runner module on Maven Central
    runtime_package: str  # the PyPI package that carries the engine's jars and launch scripts
    runtime_version: str
    runtime_folder: str  # where the jars and scripts sit inside that package
    job_server_main: str
    extra_dependencies: str = ""


ENGINES = {
    # Beam 2.70's Spark 3 runner is built against Spark 3.5.0 (Scala 2.12); pyspark 3.5.x carries that release.
    "spark": Engine("spark", "beam-runners-spark-3", "pyspark", "3.5.7", "pyspark",
                    "org.apache.beam.runners.spark.SparkJobServerDriver"),
    # Beam 2.70's Flink 1.19 runner is built against Flink 1.19.0; apache-flink-libraries carries the 1.19 runtime.
    "flink": Engine("flink", "beam-runners-flink-1.19", "apache-flink-libraries", "1.19.3", "pyflink",
                    "org.apache.beam.runners.flink.FlinkJobServerDriver", SLF4J_SIMPLE),
}


@dataclasses.dataclass(frozen=True)
class Fetched:
    job_server_classpath: str  # a java -cp value
    runtime_home: str  # SPARK_HOME, or the folder holding Flink's lib/ and bin/
    loopback_bind: str  # the LD_PRELOAD library


def cache_folder() -> str:
    default = os.path.join(os.path.expanduser("~"), ".cache", "fashion-scorer", "cluster")
    return os.environ.get(CACHE_ENV) or default


def missing_tools() -> list:
    """The programs a cluster needs that this machine lacks (Java to run it, Maven and a C compiler to fetch it)."""
    return [tool for tool in ("java", "mvn", "cc") if shutil.which(tool) is None]


def fetch(engine: Engine, cache: str = None, log=print) -> Fetched:
    """Everything `engine`'s loopback cluster runs, fetched into `cache` unless it is there already."""
    cache = cache or cache_folder()
    os.makedirs(cache, exist_ok=True)
    lib = _once(os.path.join(cache, f"{engine.runner_artifact}-{BEAM_RUNNER_VERSION}-job-server"),
                lambda folder: _maven_classpath(engine, folder), log)
    runtime = _once(os.path.join(cache, f"{engine.runtime_package}-{engine.runtime_version}"),
                    lambda folder: _pip_target(engine, folder), log)
    home = os.path.join(runtime, engine.runtime_folder)
    runtime_jars = os.path.join(home, "jars" if engine.name == "spark" else "lib", "*")
    return Fetched(os.pathsep.join([os.path.join(lib, "*"), runtime_jars]), home, _loopback_bind(cache, log))


def _once(target: str, make, log) -> str:
    """`target`, made by make(folder) into a scratch folder beside it and renamed into place, unless it exists."""
    if os.path.isdir(target):
        return target
    log(f"fetching {os.path.basename(target)} into {os.path.dirname(target)}")
    scratch = tempfile.mkdtemp(prefix=".partial-", dir=os.path.dirname(target))
    try:
        make(scratch)
        os.rename(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _maven_classpath(engine: Engine, folder: str) -> None:
    with tempfile.TemporaryDirectory() as project:
        with open(os.path.join(project, "pom.xml"), "w", encoding="utf-8") as stream:
            stream.write(POM.format(artifact=engine.runner_artifact, runner_version=BEAM_RUNNER_VERSION,
                                    job_service_version=JOB_SERVICE_VERSION, extra=engine.extra_dependencies))
        _run(["mvn", "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
              f"-DoutputDirectory={folder}"], project)


def _pip_target(engine: Engine, folder: str) -> None:
    # --no-deps: only the jars and scripts are used; the package's own Python (and its pins) stay out of every venv.
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
          "--target", folder, f"{engine.runtime_package}=={engine.runtime_version}"], folder)


def _loopback_bind(cache: str, log) -> str:
    with open(SHIM_SOURCE, "rb") as stream:
        digest = hashlib.sha256(stream.read()).hexdigest()[:16]
    library = os.path.join(cache, f"loopback_bind-{digest}.so")
    if not os.path.isfile(library):
        log(f"compiling {os.path.basename(SHIM_SOURCE)}")
        partial = f"{library}.{os.getpid()}.tmp"
        _run(["cc", "-O2", "-shared", "-fPIC", "-o", partial, SHIM_SOURCE, "-ldl"], cache)
        os.replace(partial, library)
    return library


def _run(command: list, folder: str) -> None:
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}"
                           f"{result.stderr[-3000:]}")
