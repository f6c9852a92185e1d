"""tunelab.data"""
