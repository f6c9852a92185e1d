"""tunelab.eval"""
