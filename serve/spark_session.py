"""The Spark session that ``imr-outcome score --engine spark`` starts (or finds).

Kept apart from :mod:`imr_outcome.serve.spark` (the scoring itself), which imports
:func:`spark_session` from here.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from pyspark.sql import SparkSession

from imr_outcome.logs import libraries_quiet


def spark_session(master: str | None = None, app_name: str = "imr-outcome") -> SparkSession:
    """The active Spark session, or a new one whose Python workers run this interpreter
    (unless ``PYSPARK_PYTHON`` names another).

    When the CLI quieted the console (no ``-v``, :func:`imr_outcome.logs.libraries_quiet`)
    a new session also gets ``spark.ui.showConsoleProgress=false`` and, through
    ``spark.driver.extraJavaOptions``, a log4j2 file that lets only errors through
    (:data:`QUIET_LOG4J2`); the Python workers inherit the quiet environment. Run with
    ``-v`` to see Spark's own log, or to keep driver Java options of your own.

    Args:
        master: a master URL (``local[2]``, ``spark://host:7077``, ``yarn``); None keeps
            the one ``spark-submit`` gives, else ``local[*]``.
        app_name: the application name shown by Spark.

    Returns:
        The session (``getOrCreate``: an active session is returned as it is).
    """
    # PySpark starts its Python workers with $PYSPARK_PYTHON, else whatever `python3` is
    # on PATH (not necessarily the environment this package is installed in).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    if libraries_quiet():
        # The CLI without -v: no stage progress bar, and Spark's JVM log at ERROR (its
        # default profile prints WARN lines and a banner on every start).
        builder = builder.config("spark.ui.showConsoleProgress", "false").config(
            "spark.driver.extraJavaOptions",
            f"-Dlog4j2.configurationFile=file:{_quiet_log4j2_file()}",
        )
    return builder.getOrCreate()


#: Spark's log4j2 configuration when the console is quiet: errors only, on stderr. The
#: logger of PythonGatewayServer (the JVM class PySpark starts) at the root's level keeps
#: Spark's "Setting default log level" lines away (printed when the two differ).
QUIET_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = error
"""


def _quiet_log4j2_file() -> Path:
    """:data:`QUIET_LOG4J2` written to a file the driver JVM can read."""
    path = Path(tempfile.gettempdir()) / f"imr-outcome-log4j2-{os.getuid()}.properties"
    if not path.is_file() or path.read_text(encoding="utf-8") != QUIET_LOG4J2:
        path.write_text(QUIET_LOG4J2, encoding="utf-8")
    return path
