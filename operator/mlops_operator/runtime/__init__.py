"""Programs that run inside the operator's pods (trainer, model server). Never imports kopf or controllers."""
