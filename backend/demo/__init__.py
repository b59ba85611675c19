from backend.demo.runner import run_demo

__all__ = ["run_demo"]
