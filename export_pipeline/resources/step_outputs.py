"""What steps hand each other, kept in GCS when the steps run on different machines.

The DynamoDB conversion's steps pass kilobytes between them (the manifest's
groups, the type summaries, the plan, the staged URIs) through Dagster's IO
manager. Dagster's default one writes them to the instance's storage folder,
which the steps of one machine share but Celery workers on other machines or
Kubernetes step pods do not: with a distributed executor and a staging bucket
(`gcs:` in the configuration) they go to
`gs://<staging_bucket>/<staging_prefix>/step_outputs/<run id>/<step>/<output>`
instead, readable by every pod, and kept for re-execution from a failed step
(the staging prefix's lifecycle rule removes them; deploy/README.md).
"""

from __future__ import annotations

import pickle
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext

from export_pipeline.resources.gcs import GcsResource

STEP_OUTPUTS_FOLDER = "step_outputs"


class GcsStepOutputs(ConfigurableIOManager):
    gcs: GcsResource

    def object_name(self, identifier: list[str]) -> str:
        """The object holding the output Dagster identifies by [run id, step, output, …]."""
        return "/".join([self.gcs.staging_prefix.strip("/"), STEP_OUTPUTS_FOLDER, *identifier])

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        name = self.object_name(context.get_identifier())
        with self.gcs.get_client() as client:
            blob = client.bucket(self.gcs.staging_bucket).blob(name)
            blob.upload_from_string(pickle.dumps(obj), content_type="application/octet-stream")

    def load_input(self, context: InputContext) -> Any:
        upstream = context.upstream_output
        assert upstream is not None, "an input with no upstream output has nothing to load"
        name = self.object_name(upstream.get_identifier())
        with self.gcs.get_client() as client:
            data = client.bucket(self.gcs.staging_bucket).blob(name).download_as_bytes()
        # Written by this pipeline's own steps, in the pipeline's own bucket.
        return pickle.loads(data)
