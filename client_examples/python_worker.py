"""A worker reporting the progress of a fake long job, the way a real one would.

    NOTIFIER_URL=http://127.0.0.1:8080 NOTIFIER_TOKEN=$(notifier token --sub worker --role publisher) \\
        .venv/bin/python client_examples/python_worker.py --project demo --steps 20 --delay 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import os

from notifier.client import Worker


async def run(project: str, steps: int, delay: float, task_id: str | None) -> None:
    worker = Worker(
        os.environ.get("NOTIFIER_URL", "http://127.0.0.1:8080"), lambda: os.environ["NOTIFIER_TOKEN"]
    )
    await worker.connect()
    try:
        fields = {"id": task_id} if task_id else {}
        task = await worker.create_task(project, title="Fake import", total=steps, **fields)
        print(f"created task {task['id']} in project {project}", flush=True)
        for step in range(1, steps + 1):
            await asyncio.sleep(delay)  # the "work"
            await worker.task_progress(
                task["id"], 100 * step / steps, current=step, message=f"step {step} of {steps}"
            )
        done = await worker.complete_task(task["id"], result={"steps": steps})
        print(f"task {done['id']} {done['status']}", flush=True)
    finally:
        await worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", default="demo")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--task-id")
    args = parser.parse_args()
    asyncio.run(run(args.project, args.steps, args.delay, args.task_id))


if __name__ == "__main__":
    main()
