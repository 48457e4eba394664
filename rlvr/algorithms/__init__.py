"""Pure tensor functions of the policy update: advantages, KL estimators, losses, aggregation."""
