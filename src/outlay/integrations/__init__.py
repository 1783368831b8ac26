"""Integrations with agent frameworks, each in its own module and optional extra.

``outlay.integrations.pydantic_ai`` (extra ``pydantic-ai``), ``outlay.integrations.openai_agents``
(extra ``openai-agents``), ``outlay.integrations.langchain`` (extra ``langchain``: LangChain v1
agents and LangGraph) and ``outlay.integrations.litellm`` (extra ``litellm``: the SDK, its
Router and the proxy) import their framework when *they* are imported; ``import outlay`` and
``import outlay.integrations`` import none of them.
"""
