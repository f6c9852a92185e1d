"""tunelab.tracking"""
