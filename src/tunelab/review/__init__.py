"""The human-review web app: projects, double review, agreement, adjudication, export."""
