"""tunelab.recipes"""
