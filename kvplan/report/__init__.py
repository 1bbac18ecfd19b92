"""Rendering only: rich tables, JSON, CSV, markdown. Nothing here computes a figure."""
