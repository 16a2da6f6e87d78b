"""Fine-tuning (``python -m training.finetune``): not implemented yet, see the project's issue 3."""
