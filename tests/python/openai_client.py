"""Drives a Switchyard server with the official `openai` Python client.

Usage: python3 openai_client.py BASE_URL MODEL
Exits non-zero (with a message) on the first mismatch.
"""
import sys

import openai


def main() -> None:
    base, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)

    models = [m.id for m in client.models.list()]
    assert model in models, models

    comp = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=5, temperature=0)
    assert comp.object == "text_completion", comp
    assert comp.choices[0].finish_reason in ("length", "stop"), comp
    assert comp.usage.completion_tokens <= 5 and comp.usage.prompt_tokens > 0, comp.usage

    pieces, finish, usage = [], None, None
    for chunk in client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=6, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    ):
        if chunk.choices:
            pieces.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert finish == "length", finish
    assert usage is not None and usage.completion_tokens == 6, usage
    assert "".join(pieces), pieces

    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
        max_tokens=4,
    )
    assert chat.object == "chat.completion", chat
    assert chat.choices[0].message.role == "assistant", chat
    assert chat.choices[0].message.content, chat
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

    deltas, roles, finish = [], [], None
    for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count to three."}],
        max_completion_tokens=5, stream=True, extra_body={"ignore_eos": True},
    ):
        d = chunk.choices[0].delta
        if d.role:
            roles.append(d.role)
        if d.content:
            deltas.append(d.content)
        finish = chunk.choices[0].finish_reason or finish
    assert roles == ["assistant"], roles
    assert finish == "length", finish
    assert deltas, deltas

    try:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        assert e.status_code == 404
    # Parallel sampling: n choices, each with its index, the prompt counted once.
    many = client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=3, n=3, extra_body={"ignore_eos": True},
    )
    assert [c.index for c in many.choices] == [0, 1, 2], many
    assert many.usage.completion_tokens == 9, many.usage
    seen = set()
    for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3, n=2,
        stream=True, extra_body={"ignore_eos": True},
    ):
        seen.update(c.index for c in chunk.choices)
    assert seen == {0, 1}, seen
    try:
        client.completions.create(model=model, prompt="x", max_tokens=1, n=17)
        raise AssertionError("n=17 accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400

    print("openai client: completions, chat, streaming, n > 1 and errors OK")


if __name__ == "__main__":
    main()
