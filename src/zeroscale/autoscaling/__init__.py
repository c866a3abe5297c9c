"""Application Auto Scaling for real-time endpoint variants: scalable targets, target-tracking policies, the
loop that applies them and the scaling activities it records."""
