from vllm import EVENTS


def cleanup_dist_env_and_memory(shutdown_ray: bool = False) -> None:
    EVENTS.append(("cleanup", {}))
