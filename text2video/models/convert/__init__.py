"""models/convert"""
