"""attnlens.kernel"""
