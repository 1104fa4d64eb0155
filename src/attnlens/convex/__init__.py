"""attnlens.convex"""
