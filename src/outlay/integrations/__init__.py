"""Integrations with agent frameworks, each in its own module and optional extra.

``outlay.integrations.pydantic_ai`` (extra ``pydantic-ai``) and
``outlay.integrations.openai_agents`` (extra ``openai-agents``) import their framework when
*they* are imported; ``import outlay`` and ``import outlay.integrations`` import neither.
"""
