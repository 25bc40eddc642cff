"""TF Serving's ``--monitoring_config_file``: where its REST port serves Prometheus text.

``MonitoringConfig`` lives in TF Serving's ``monitoring_config.proto``, which no pip package ships
(``tensorflow-serving-api`` has ``model_server_config.proto`` but not this one). Its two messages are
described here by the proto's own field names and numbers, and the file is parsed with protobuf's
text format against them, so a misspelt field is an error with its line and column::

    prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }

``enable: false`` (or no ``prometheus_config``) serves nothing; an empty ``path`` is TF Serving's
default, ``/monitoring/prometheus/metrics``.

Pure: protobuf only.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from backends.errors import ConfigError
from deployments.repository.triton_schema import read_config_text, text_format_error

__all__ = ["DEFAULT_PROMETHEUS_PATH", "parse_monitoring_config", "read_monitoring_config"]

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's PrometheusExporter::kPrometheusPath
_TF_MODELS = "/v1/models"


def _message_class() -> type:
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="infergrid/tf_monitoring_config.proto",
                                              package="tensorflow.serving", syntax="proto3")
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, label=field.LABEL_OPTIONAL, type=field.TYPE_BOOL)
    prometheus.field.add(name="path", number=2, label=field.LABEL_OPTIONAL, type=field.TYPE_STRING)
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, label=field.LABEL_OPTIONAL, type=field.TYPE_MESSAGE,
                         type_name=".tensorflow.serving.PrometheusConfig")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


_MonitoringConfig = _message_class()


def parse_monitoring_config(text: str, source: str) -> str:
    """The Prometheus path a ``MonitoringConfig`` text asks for ("" when it asks for none).

    Raises:
        ConfigError: not a ``MonitoringConfig`` (``<source>:<line>:<column>: ...``), or a path that is
            not absolute or lies under TF Serving's own ``/v1/models``.
    """
    message = _MonitoringConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise text_format_error(exc, source) from None
    prometheus = message.prometheus_config
    if not prometheus.enable:
        return ""
    path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not path.startswith("/") or path.rstrip("/") == "":
        raise ConfigError(f"{source}: prometheus_config.path: must start with '/' and name a path, got {path!r}")
    if path == _TF_MODELS or path.startswith(_TF_MODELS + "/"):
        raise ConfigError(f"{source}: prometheus_config.path: {path!r} lies under {_TF_MODELS}, TF Serving's API")
    return path


def read_monitoring_config(path: Path) -> str:
    """Read ``--monitoring_config_file`` (see ``parse_monitoring_config``).

    Raises:
        ConfigError: unreadable or invalid.
    """
    return parse_monitoring_config(read_config_text(path), str(path))
