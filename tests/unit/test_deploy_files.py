"""cluster.yaml passes Ray's own cluster-launcher schema; the example Serve config matches the CLI."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_yaml_is_valid_for_ray_up() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    validate_config(config)  # raises on any schema violation
    assert set(config["available_node_types"]) == {"head", "gpu_worker"}
    assert config["head_node_type"] == "head"
    setup = " ".join(config["setup_commands"])
    assert "make install" in setup
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert starts.count("RAY_SERVE_THROUGHPUT_OPTIMIZED=1") == 2


def test_example_serve_config_is_what_infergrid_config_writes(example_repository: Path) -> None:
    from deployments.applications.serve_config import repository_serve_config

    committed = yaml.safe_load((ROOT / "examples" / "serve_config.yaml").read_text())
    generated = repository_serve_config(example_repository, host="0.0.0.0", port=8000)
    assert [a["name"] for a in committed["applications"]] == [a["name"] for a in generated["applications"]]
    assert [a["import_path"] for a in committed["applications"]] == [a["import_path"] for a in generated["applications"]]
    for mine, theirs in zip(committed["applications"], generated["applications"]):
        assert {k: v for k, v in mine["args"].items() if k != "repository"} == \
               {k: v for k, v in theirs["args"].items() if k != "repository"}


def test_cluster_nodes_start_ray_with_the_settings_infergrid_serve_uses() -> None:
    import yaml

    from deployments.launch.cli import PERFORMANCE_ENV

    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        text = " ".join(cluster[key])
        missing = [f"{name}={value}" for name, value in PERFORMANCE_ENV.items()
                   if name != "RAY_USAGE_STATS_ENABLED" and f"{name}={value}" not in text]
        assert not missing, f"{key} lacks {missing}"


def test_serve_config_composites_call_the_version_apps_listed_beside_them(example_repository: Path) -> None:
    from deployments.applications.ensembles import build_composite_app
    from deployments.applications.serve_config import repository_serve_config

    config = repository_serve_config(example_repository)
    names = {a["name"] for a in config["applications"]}
    composite = next(a for a in config["applications"] if a["name"] == "risk_ensemble")
    assert composite["import_path"] == "deployments.applications.ensembles:build_composite_app"
    bound = build_composite_app(composite["args"])._bound_deployment  # Serve's own record of the arguments
    static = bound.init_args[4]
    assert {r["app"] for member in static.values() for r in member["routes"]} <= names
    assert bound.num_replicas == 2  # instance_group count of the example
