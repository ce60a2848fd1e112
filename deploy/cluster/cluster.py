"""Starts and stops a Spark or Flink cluster on 127.0.0.1 with Beam's job server and an SDK worker pool.

    python deploy/cluster/cluster.py up spark|flink [--state DIR]   # fetches what it needs, starts, prints the flags
    python deploy/cluster/cluster.py down [--state DIR]             # stops every process it started, by pid

Spark: a standalone master and two workers (one core each), each its own JVM. Flink: a JobManager and two
TaskManagers (two slots each, so one can take over the other's work), task retries configured. Each engine gets
Beam's job server, and Python SDK workers come from one external worker pool (--environment_type=EXTERNAL) that runs
the Python this script runs with, with the project importable. Every process binds 127.0.0.1 only.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_fetch  # noqa: E402 (a sibling script, found by the line above)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STATE_FILE = "cluster.json"
WORKERS = 2
START_TIMEOUT = 120.0
# Spark 3.5 on Java 17 needs these opened to it (spark-submit adds the same ones).
JAVA_OPENS = [f"--add-opens=java.base/{package}=ALL-UNNAMED" for package in (
    "java.lang", "java.lang.invoke", "java.lang.reflect", "java.io", "java.net", "java.nio", "java.util",
    "java.util.concurrent", "java.util.concurrent.atomic", "sun.nio.ch", "sun.nio.cs", "sun.security.action",
    "sun.util.calendar")]
FLINK_CONFIG = """jobmanager:
  rpc: {{address: 127.0.0.1, port: {rpc_port}}}
  bind-host: 127.0.0.1
  memory: {{process: {{size: 1024m}}}}
taskmanager:
  host: 127.0.0.1
  bind-host: 127.0.0.1
  numberOfTaskSlots: 2
  # Beam's batch jobs open many shuffles at once: two slots of them need more network buffers than the default.
  memory: {{process: {{size: 2048m}}, network: {{min: 256m, max: 256m}}}}
rest: {{address: 127.0.0.1, bind-address: 127.0.0.1, port: {rest_port}}}
parallelism: {{default: 2}}
# A task whose TaskManager or SDK worker died is retried; a lost TaskManager is noticed within heartbeat.timeout.
restart-strategy: {{type: fixed-delay, fixed-delay: {{attempts: 3, delay: 2 s}}}}
heartbeat: {{interval: 2000, timeout: 10000}}
io: {{tmp: {{dirs: {tmp}}}}}
blob: {{storage: {{directory: {tmp}}}}}
"""
LOG4J = """rootLogger.level = INFO
rootLogger.appenderRef.console.ref = console
appender.console.name = console
appender.console.type = CONSOLE
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss,SSS} %-5p %c{1} - %m%n
"""


@dataclasses.dataclass
class Cluster:
    engine: str
    state: str  # the folder with its logs, work folders and cluster.json
    processes: dict  # name -> pid, in start order
    job_port: int
    pool_port: int
    web_ui: str

    def submit_flags(self) -> list:
        """The scorer's flags that run it on this cluster."""
        return ["--runner=PortableRunner", f"--job_endpoint=127.0.0.1:{self.job_port}",
                "--environment_type=EXTERNAL", f"--environment_config=127.0.0.1:{self.pool_port}"]


def up(engine_name: str, state: str, python: str = sys.executable, pool_env: dict = None, log=print) -> Cluster:
    """Fetches what `engine_name` needs, starts its cluster with state in `state`, and returns once every part
    answers; on any failure stops what it started and raises."""
    missing = cluster_fetch.missing_tools()
    if missing:
        raise RuntimeError(f"a loopback cluster needs {', '.join(missing)} on PATH (Java 17, Maven and a C compiler)")
    engine = cluster_fetch.ENGINES[engine_name]
    fetched = cluster_fetch.fetch(engine, log=log)
    os.makedirs(state, exist_ok=True)
    cluster = Cluster(engine_name, os.path.abspath(state), {}, _free_port(), _free_port(), "")
    try:
        start = _start_spark if engine_name == "spark" else _start_flink
        start(cluster, fetched)
        _start_pool(cluster, python, pool_env or {})
        _save(cluster)
    except BaseException:
        _stop(cluster.processes, cluster.state)
        raise
    return cluster


def load(state: str) -> Cluster:
    """The cluster that runs from `state` (as `up` left it in cluster.json)."""
    with open(os.path.join(state, STATE_FILE), encoding="utf-8") as stream:
        return Cluster(**json.load(stream))


def down(state: str) -> None:
    """Stops every process the cluster in `state` started (its process group: executors and SDK workers too)."""
    if os.path.isfile(os.path.join(state, STATE_FILE)):
        _stop(load(state).processes, state)
        os.remove(os.path.join(state, STATE_FILE))


def _start_spark(cluster: Cluster, fetched) -> None:
    home = fetched.runtime_home
    env = _java_env(fetched, SPARK_HOME=home, SPARK_LOCAL_IP="127.0.0.1", SPARK_NO_DAEMONIZE="1",
                    SPARK_LOCAL_DIRS=_folder(cluster, "local"), SPARK_LOG_DIR=_folder(cluster, "logs"))
    spark_class = ["bash", os.path.join(home, "bin", "spark-class")]
    master_port, master_ui = _free_port(), _free_port()
    _start(cluster, "master", spark_class + ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                             "--port", str(master_port), "--webui-port", str(master_ui)], env)
    _wait_for_port(cluster, "master", master_port)
    master = f"spark://127.0.0.1:{master_port}"
    for number in range(1, WORKERS + 1):
        _start(cluster, f"worker{number}", spark_class + [
            "org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1", "--webui-port", str(_free_port()),
            "--cores", "1", "--memory", "2g", "--work-dir", _folder(cluster, f"worker{number}")], env)
    cluster.web_ui = f"http://127.0.0.1:{master_ui}"
    _wait_until(cluster, "master", lambda: _json(f"{cluster.web_ui}/json/").get("aliveworkers") == WORKERS,
                f"{WORKERS} Spark workers registered")
    # One SparkContext for the job server's life (Beam's reuse switch): the executors, with the job server's jars
    # staged once, serve every job; otherwise each job starts its own and the next job, submitted while the last
    # one's context is still stopping, fails with "Only one SparkContext should be running in this JVM".
    driver = ["-Dspark.driver.host=127.0.0.1", "-Dspark.driver.bindAddress=127.0.0.1", "-Dspark.ui.enabled=false",
              "-Dbeam.spark.test.reuseSparkContext=true"]
    _start_job_server(cluster, fetched, JAVA_OPENS + driver, ["--spark-master-url", master], env)


def _start_flink(cluster: Cluster, fetched) -> None:
    conf = _folder(cluster, "conf")
    rest_port = _free_port()
    with open(os.path.join(conf, "config.yaml"), "w", encoding="utf-8") as stream:
        stream.write(FLINK_CONFIG.format(rpc_port=_free_port(), rest_port=rest_port, tmp=_folder(cluster, "tmp")))
    with open(os.path.join(conf, "log4j2.properties"), "w", encoding="utf-8") as stream:
        stream.write(LOG4J)
    env = _java_env(fetched)
    classpath = os.path.join(fetched.runtime_home, "lib", "*")
    logging = f"-Dlog4j.configurationFile=file:{os.path.join(conf, 'log4j2.properties')}"
    jvm, dynamic = _flink_memory(fetched, conf, "GET_JM_RESOURCE_PARAMS")
    _start(cluster, "jobmanager", ["java", *jvm, logging, "-cp", classpath,
                                   "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
                                   "--configDir", conf, *dynamic], env)
    jvm, dynamic = _flink_memory(fetched, conf, "GET_TM_RESOURCE_PARAMS")
    for number in range(1, WORKERS + 1):
        _start(cluster, f"taskmanager{number}", [
            "java", *jvm, logging, "-cp", classpath, "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
            "--configDir", conf, *dynamic, "-D", f"taskmanager.resource-id=taskmanager{number}"], env)
    cluster.web_ui = f"http://127.0.0.1:{rest_port}"
    _wait_until(cluster, "jobmanager", lambda: _json(f"{cluster.web_ui}/overview").get("taskmanagers") == WORKERS,
                f"{WORKERS} Flink TaskManagers registered")
    _start_job_server(cluster, fetched, [], ["--flink-master", f"127.0.0.1:{rest_port}"], env)


def _flink_memory(fetched, conf: str, what: str) -> tuple:
    """Flink's own sizing of a JobManager's or TaskManager's JVM from the config (what its launch scripts do):
    (JVM flags, dynamic properties)."""
    utilities = os.path.join(fetched.runtime_home, "bin", "bash-java-utils.jar")
    classpath = os.pathsep.join([utilities, os.path.join(fetched.runtime_home, "lib", "*")])
    result = subprocess.run(["java", "-cp", classpath, "org.apache.flink.runtime.util.bash.BashJavaUtils", what,
                             "--configDir", conf], capture_output=True, text=True, check=True)
    prefix = "BASH_JAVA_UTILS_EXEC_RESULT:"
    lines = [line[len(prefix):].split() for line in result.stdout.splitlines() if line.startswith(prefix)]
    return lines[0], lines[1]


def _start_job_server(cluster: Cluster, fetched, jvm: list, engine_flags: list, env: dict) -> None:
    engine = cluster_fetch.ENGINES[cluster.engine]
    _start(cluster, "job_server", [
        "java", *jvm, "-cp", fetched.job_server_classpath, engine.job_server_main, *engine_flags,
        "--job-host", "127.0.0.1", "--job-port", str(cluster.job_port), "--artifact-port", "0",
        "--expansion-port", "-1", "--artifacts-dir", _folder(cluster, "artifacts")], env)
    _wait_for_port(cluster, "job_server", cluster.job_port)


def _start_pool(cluster: Cluster, python: str, pool_env: dict) -> None:
    """The SDK worker pool (worker_pool.py): its workers run `python`, with this checkout importable."""
    env = dict(os.environ, **pool_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_pool.py")
    _start(cluster, "pool", [python, script, "--port", str(cluster.pool_port)], env)
    _wait_for_port(cluster, "pool", cluster.pool_port)


def _java_env(fetched, **extra) -> dict:
    return dict(os.environ, LD_PRELOAD=fetched.loopback_bind, **extra)


def _folder(cluster: Cluster, name: str) -> str:
    path = os.path.join(cluster.state, name)
    os.makedirs(path, exist_ok=True)
    return path


def _start(cluster: Cluster, name: str, command: list, env: dict) -> None:
    """Starts `name` in its own process group (its children, executors and SDK workers, stop with it), logging to
    STATE/name.log."""
    with open(os.path.join(cluster.state, f"{name}.log"), "wb") as log:
        process = subprocess.Popen(command, cwd=cluster.state, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    cluster.processes[name] = process.pid


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _json(url: str) -> dict:
    with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)
    return {}


def _wait_for_port(cluster: Cluster, name: str, port: int) -> None:
    def answers():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        return False
    _wait_until(cluster, name, answers, f"listening on 127.0.0.1:{port}")


def _wait_until(cluster: Cluster, name: str, ready, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(cluster.processes[name]):
            raise RuntimeError(f"{name} exited before {what}; see {os.path.join(cluster.state, name + '.log')}")
        if ready():
            return
        time.sleep(0.3)
    raise TimeoutError(f"{name}: not {what} within {START_TIMEOUT:.0f} s; see {cluster.state}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stop(processes: dict, state: str, grace: float = 10.0) -> None:
    """SIGTERM to each process group, newest first, then SIGKILL to what is left after `grace` seconds; only groups
    whose leader still runs from `state` (a pid reused by another program is left alone)."""
    groups = [pid for pid in reversed(list(processes.values())) if _started_in(pid, state)]
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signum)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(pid) for pid in groups):
            time.sleep(0.2)
        for pid in groups:  # reap our own children; others' are reaped by init
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _started_in(pid: int, state: str) -> bool:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/cwd") == os.path.abspath(state)
    return False


def _save(cluster: Cluster) -> None:
    with open(os.path.join(cluster.state, STATE_FILE), "w", encoding="utf-8") as stream:
        json.dump(dataclasses.asdict(cluster), stream, indent=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("engine", nargs="?", choices=sorted(cluster_fetch.ENGINES), default="spark")
    parser.add_argument("--state", default=os.path.join(REPO_ROOT, ".cluster"),
                        help="folder for the cluster's logs, work folders and pids (default: .cluster)")
    args = parser.parse_args(argv)
    if args.action == "down":
        down(args.state)
        print(f"stopped the cluster of {args.state}")
        return 0
    if os.path.isfile(os.path.join(args.state, STATE_FILE)):
        print(f"a cluster runs from {args.state} already: `make cluster-down` first", file=sys.stderr)
        return 2
    cluster = up(args.engine, args.state)
    print(f"{args.engine} on 127.0.0.1: web UI {cluster.web_ui}; logs in {cluster.state}")
    print("score on it with: python -m pipeline.score --input ... --output ... " + " ".join(cluster.submit_flags()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
