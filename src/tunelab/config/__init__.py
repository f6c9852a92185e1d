"""tunelab.config"""
