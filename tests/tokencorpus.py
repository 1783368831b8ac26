# ruff: noqa: RUF001 - the corpus is written in the scripts it measures
"""Text classes the default token estimate is measured on (tests and benchmarks/bench_estimates).

``SAMPLES`` holds written texts per class; ``generate(kind, rng, size)`` makes more of a class
from a seeded ``random.Random`` (the property tests and the benchmark draw from it), so every
run measures the same thing; ``seeded(kind, count, low, high)`` is a fixed corpus of such texts.
"""

from __future__ import annotations

import random
import uuid

ENGLISH = [
    """The budget is checked before the request leaves the process. If the estimate of the
prompt plus the largest answer the model may give does not fit, nothing is sent and the caller
gets an error that says which limit was reached, how much was spent, and how much was asked for.
When the provider reports the real usage, the hold is settled at that figure: what was held but
not used comes back, and anything above the hold is recorded as spend, never lost.""",
    """Hi Sam, thanks for the quick reply! I've attached the notes from Tuesday's meeting. We
agreed to ship the new billing page by the end of next week, but Priya thinks the migration
might take longer than we'd hoped (she's still waiting on access to the staging database).
Could you check whether the invoices from March were exported correctly? Cheers, Alex.""",
    """Photosynthesis converts light energy into chemical energy stored in glucose. In the
light-dependent reactions, chlorophyll absorbs photons and splits water molecules, releasing
oxygen as a by-product; the Calvin cycle then fixes carbon dioxide into three-carbon sugars.
Roughly 90% of all photosynthesis on Earth happens in oceans, carried out by phytoplankton.""",
    """Q: Why does my agent keep calling the search tool in a loop?
A: Usually because the tool's answer never says "no results", so the model assumes it should
retry. Return an explicit, short message such as "No documents matched 'quarterly revenue'."
and cap the number of tool calls per run; a hard limit is cheaper than a surprised invoice.""",
]

CODE = [
    '''import asyncio
from dataclasses import dataclass, field


@dataclass
class Account:
    owner: str
    balance: int = 0
    history: list[tuple[str, int]] = field(default_factory=list)

    def deposit(self, amount: int) -> None:
        if amount <= 0:
            raise ValueError(f"deposit must be positive, got {amount!r}")
        self.balance += amount
        self.history.append(("deposit", amount))


async def main() -> None:
    acct = Account("ada")
    await asyncio.gather(*(asyncio.to_thread(acct.deposit, n) for n in range(1, 11)))
    print(acct.balance, len(acct.history))
''',
    '''export async function fetchUsers(apiBase, { page = 1, perPage = 50 } = {}) {
  const url = new URL(`${apiBase}/users`);
  url.searchParams.set("page", String(page));
  url.searchParams.set("per_page", String(perPage));
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  if (!res.ok) throw new Error(`GET ${url} failed: ${res.status}`);
  const body = await res.json();
  return body.items.map((u) => ({ id: u.id, name: u.display_name ?? u.login }));
}
''',
    '''{"model": "gpt-4o-mini", "temperature": 0.2, "messages": [{"role": "system",
"content": "You are a helpful assistant."}, {"role": "user", "content": "List three
colours."}], "tools": [{"type": "function", "function": {"name": "get_weather",
"parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit":
{"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}]}''',
    '''SELECT c.id, c.name, SUM(o.total_cents) AS spent
FROM customers AS c
JOIN orders AS o ON o.customer_id = c.id
WHERE o.created_at >= DATE '2024-01-01' AND o.status IN ('paid', 'shipped')
GROUP BY c.id, c.name
HAVING SUM(o.total_cents) > 100000
ORDER BY spent DESC
LIMIT 20;''',
]

DIGITS = [
    "3.14159265358979323846264338327950288419716939937510582097494459230781640628620899",
    "Invoice 2024-00817: 12 x 49.99 = 599.88; tax 20% = 119.98; total 719.86 (due 2024-07-31)",
    "+1 (415) 555-0132, +44 20 7946 0958, +49 30 901820, 0800 123 4567",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30",
    "0,1,1,2,3,5,8,13,21,34,55,89,144,233,377,610,987,1597,2584,4181,6765,10946,17711",
    "lat=52.520008, lon=13.404954; ts=1718035200123; id=9007199254740991; crc=0x1f2e3d4c",
]

CJK = [
    """预算在请求离开进程之前就会被检查。如果提示的估算加上模型可能给出的最长回答放不下，
就不会发送任何内容，调用方会收到一个错误，说明达到了哪个限额、已经花了多少、又请求了多少。
当服务商报告实际用量时，预留会按照这个数字结算：多预留的部分会退回，超出的部分会被记为支出，绝不会丢失。""",
    """今日は朝から雨が降っていたので、駅まで歩くのをやめてバスに乗りました。会社に着くと、
来週のリリースに向けた会議がすでに始まっていて、田中さんが新しい請求ページの画面を説明していました。
予算の上限を超えないように、ツールの呼び出し回数にも制限をかけることになりました。""",
    """예산은 요청이 프로세스를 떠나기 전에 확인됩니다. 프롬프트의 추정치와 모델이 줄 수 있는
가장 긴 답변이 맞지 않으면 아무것도 전송되지 않고, 호출자는 어떤 한도에 도달했는지 알려 주는
오류를 받습니다. 실제 사용량이 보고되면 예약은 그 수치로 정산됩니다.""",
    """光合作用把光能转化为储存在葡萄糖中的化学能。地球上大约百分之九十的光合作用发生在海洋里，
由浮游植物完成。叶绿素吸收光子并分解水分子，释放出氧气。""",
]

CYRILLIC = [
    """Бюджет проверяется до того, как запрос покидает процесс. Если оценка подсказки вместе с
самым длинным ответом, который может дать модель, не помещается, ничего не отправляется, и
вызывающая сторона получает ошибку: какой лимит достигнут, сколько уже потрачено и сколько
запрошено. Когда поставщик сообщает реальный расход, резерв закрывается по этой цифре.""",
    """Привет, Саша! Спасибо за быстрый ответ. Я приложил заметки со вторничной встречи. Мы
договорились выпустить новую страницу оплаты к концу следующей недели, но Ирина считает, что
перенос данных займёт больше времени (она всё ещё ждёт доступа к тестовой базе).""",
    """Фотосинтез перетворює енергію світла на хімічну енергію, що зберігається в глюкозі.
Приблизно дев'яносто відсотків усього фотосинтезу на Землі відбувається в океанах.""",
    """Съешь же ещё этих мягких французских булок, да выпей чаю. Щука, ёж, эхо, объявление,
подъезд, вьюга, жёлтый, шёпот, цапля, хвощ.""",
]

EMOJI = [
    "Great job team 🎉🎉🎉 the release is out 🚀 thanks everyone 🙏❤️",
    "👨‍👩‍👧‍👦 👩🏽‍💻 🧑🏿‍🚀 🏳️‍🌈 🇯🇵 🇺🇦 🇧🇷 🇩🇪 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿 🤷‍♀️ 🤦🏻‍♂️",
    "😀😃😄😁😆😅🤣😂🙂🙃🫠😉😊😇🥰😍🤩😘😗☺️😚😙🥲😋😛😜🤪😝🤑🤗🤭🫢🫣🤫🤔🫡",
    "🍏🍎🍐🍊🍋🍌🍉🍇🍓🫐🍈🍒🍑🥭🍍🥥🥝🍅🍆🥑🥦🥬🥒🌶️🫑🌽🥕🫒🧄🧅🥔🍠",
    "Status: ✅ build ❌ lint ⚠️ docs ⏳ deploy 🔒 secrets 🔑 keys 📈 +12% 📉 -3%",
]

UUIDS = [
    "550e8400-e29b-41d4-a716-446655440000",
    "request_id=7c9e6679-7425-40de-944b-e07fc1f90ae7 trace=4bf92f3577b34da6a3ce929d0e0e4736",
    "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b (HEAD -> main, origin/main)",
]

SAMPLES: dict[str, list[str]] = {
    "english": ENGLISH,
    "code": CODE,
    "digits": DIGITS,
    "uuids": UUIDS,
    "cjk": CJK,
    "cyrillic": CYRILLIC,
    "emoji": EMOJI,
}
"""Written texts per class."""

KINDS = tuple(SAMPLES)


def _words(texts: list[str]) -> list[str]:
    return [word for text in texts for word in text.split()]


def _chars(texts: list[str]) -> list[str]:
    return [c for text in texts for c in text if not c.isspace()]


_ENGLISH_WORDS = _words(ENGLISH)
_CODE_LINES = [line for text in CODE for line in text.splitlines()]
_CYRILLIC_WORDS = _words(CYRILLIC)
_CJK_CHARS = _chars(CJK)
_EMOJI = [e for text in EMOJI for e in text.split() if not e.isascii()] + _chars(EMOJI[2:4])
_SEPARATORS = [" ", ", ", ".", "-", "\n", "", ":", "/", " x ", "+"]


def generate(kind: str, rng: random.Random, size: int) -> str:
    """A text of class ``kind`` of about ``size`` characters, drawn from ``rng``."""
    parts: list[str] = []
    length = 0
    while length < size:
        part = _part(kind, rng)
        parts.append(part)
        length += len(part)
    return "".join(parts)


def seeded(kind: str, count: int, low: int, high: int) -> list[str]:
    """``count`` texts of class ``kind`` of ``low``-``high`` characters, text ``i`` from the seed
    ``f"{kind}:{low}-{high}:{i}"``: the same texts on every run and every machine."""
    texts = []
    for i in range(count):
        rng = random.Random(f"{kind}:{low}-{high}:{i}")
        texts.append(generate(kind, rng, rng.randint(low, high)))
    return texts


def _part(kind: str, rng: random.Random) -> str:
    if kind == "english":
        return rng.choice(_ENGLISH_WORDS) + rng.choice([" ", " ", " ", " ", ", ", ". ", "\n"])
    if kind == "code":
        line = rng.choice(_CODE_LINES)
        return " " * rng.choice([0, 0, 2, 4, 8]) + line.strip() + "\n"
    if kind == "digits":
        return str(rng.randrange(10 ** rng.randint(1, 12))) + rng.choice(_SEPARATORS)
    if kind == "uuids":
        value = uuid.UUID(int=rng.getrandbits(128), version=4)
        shape = rng.randrange(3)
        text = str(value) if shape == 0 else value.hex if shape == 1 else str(value).upper()
        return text + rng.choice([" ", "\n", ", ", "/"])
    if kind == "cjk":
        return "".join(rng.choice(_CJK_CHARS) for _ in range(rng.randint(1, 12))) + rng.choice(
            ["", "", "，", "。", "\n", " "])
    if kind == "cyrillic":
        return rng.choice(_CYRILLIC_WORDS) + rng.choice([" ", " ", " ", ", ", ". ", "\n"])
    if kind == "emoji":
        return rng.choice(_EMOJI) + rng.choice(["", "", " ", " ok ", "\n"])
    raise ValueError(f"unknown text class {kind!r}; known: {', '.join(KINDS)}")
