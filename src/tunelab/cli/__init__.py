"""tunelab.cli"""
