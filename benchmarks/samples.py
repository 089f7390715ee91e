"""Small benchmark samples written by this project, in the official MMLU and C-Eval layouts.

`arena demo` evaluates its checkpoints on them so the leaderboard's benchmark columns fill in
on a machine without the real data sets. The questions are our own (general knowledge a small
model may or may not know); the files are laid out exactly as the official ones, so the same
loaders read them and `arena bench run --data` takes the folders.
"""

from __future__ import annotations

import csv
from pathlib import Path

Row = tuple[str, str, str, str, str, str]  # question, A, B, C, D, answer

MMLU: dict[str, dict[str, list[Row]]] = {
    "high_school_geography": {
        "dev": [
            ("Which is the largest ocean on Earth?", "Atlantic", "Indian", "Pacific", "Arctic", "C"),
            ("On which continent is Egypt?", "Asia", "Africa", "Europe", "Oceania", "B"),
            ("Which river flows through Paris?", "Seine", "Thames", "Danube", "Rhine", "A"),
            ("What is the capital of Japan?", "Osaka", "Kyoto", "Seoul", "Tokyo", "D"),
            ("Which desert is the largest hot desert?", "Gobi", "Sahara", "Kalahari", "Mojave", "B"),
        ],
        "test": [
            ("What is the capital of France?", "Berlin", "Madrid", "Paris", "Rome", "C"),
            ("Which continent is Brazil in?", "South America", "Africa", "Asia", "Europe", "A"),
            ("What is the longest river in Africa?", "Congo", "Niger", "Zambezi", "Nile", "D"),
            ("Mount Everest lies in which mountain range?", "Alps", "Himalayas", "Andes",
             "Rockies", "B"),
            ("What is the capital of Italy?", "Rome", "Milan", "Naples", "Venice", "A"),
            ("Which country has the largest population in South Asia?", "Nepal", "Pakistan",
             "India", "Bangladesh", "C"),
            ("The equator passes through which country?", "Canada", "Norway", "Japan", "Kenya",
             "D"),
            ("What is the capital of Germany?", "Hamburg", "Berlin", "Munich", "Bonn", "B"),
        ],
    },
    "elementary_mathematics": {
        "dev": [
            ("What is 2 + 2?", "3", "4", "5", "6", "B"),
            ("What is 10 - 3?", "7", "6", "8", "13", "A"),
            ("What is 3 × 3?", "6", "12", "9", "33", "C"),
            ("What is half of 10?", "2", "4", "20", "5", "D"),
            ("How many sides does a triangle have?", "3", "4", "5", "6", "A"),
        ],
        "test": [
            ("What is 5 + 7?", "11", "12", "13", "57", "B"),
            ("What is 9 - 4?", "5", "4", "6", "13", "A"),
            ("What is 6 × 2?", "8", "10", "12", "14", "C"),
            ("How many sides does a square have?", "3", "5", "6", "4", "D"),
            ("What is 100 ÷ 10?", "1", "10", "100", "1000", "B"),
            ("Which number is even?", "3", "7", "8", "9", "C"),
            ("What is 1 + 1?", "2", "3", "1", "11", "A"),
            ("How many minutes are in an hour?", "30", "100", "24", "60", "D"),
        ],
    },
}

CEVAL: dict[str, dict[str, list[Row]]] = {
    "high_school_geography": {
        "dev": [
            ("世界上面积最大的大洋是", "大西洋", "印度洋", "太平洋", "北冰洋", "C"),
            ("中国的首都是", "上海", "北京", "广州", "南京", "B"),
            ("长江注入的海洋是", "东海", "南海", "黄海", "渤海", "A"),
            ("世界上最高的山峰是", "乞力马扎罗山", "阿尔卑斯山", "富士山", "珠穆朗玛峰", "D"),
            ("撒哈拉沙漠位于", "亚洲", "非洲", "南美洲", "大洋洲", "B"),
        ],
        "val": [
            ("日本的首都是", "大阪", "京都", "东京", "名古屋", "C"),
            ("中国最长的河流是", "长江", "黄河", "珠江", "淮河", "A"),
            ("地球上最大的大陆是", "非洲", "北美洲", "欧洲", "亚洲", "D"),
            ("法国的首都是", "里昂", "巴黎", "马赛", "尼斯", "B"),
            ("赤道穿过的国家是", "加拿大", "挪威", "肯尼亚", "日本", "C"),
            ("黄河流入", "渤海", "东海", "南海", "黄海", "A"),
        ],
    },
    "middle_school_mathematics": {
        "dev": [
            ("2 + 3 = ", "4", "5", "6", "7", "B"),
            ("10 - 4 = ", "6", "5", "4", "14", "A"),
            ("3 × 4 = ", "7", "10", "12", "34", "C"),
            ("20 ÷ 5 = ", "2", "5", "100", "4", "D"),
            ("三角形的内角和是", "180度", "90度", "360度", "270度", "A"),
        ],
        "val": [
            ("7 + 8 = ", "14", "15", "16", "78", "B"),
            ("正方形有几条边", "三", "五", "四", "六", "C"),
            ("9 × 9 = ", "81", "18", "99", "72", "A"),
            ("一小时有多少分钟", "100", "24", "30", "60", "D"),
            ("下列哪个数是偶数", "3", "8", "5", "7", "B"),
            ("12 - 5 = ", "6", "8", "7", "17", "C"),
        ],
    },
}


def _write(path: Path, rows: list[list[str]], header: list[str] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def write_mmlu_sample(root: Path) -> Path:
    """``root/data/{dev,test}/<subject>_{split}.csv``, no header (MMLU's layout)."""
    for subject, splits in MMLU.items():
        for split, rows in splits.items():
            _write(root / "data" / split / f"{subject}_{split}.csv", [list(r) for r in rows],
                   None)
    return root


def write_ceval_sample(root: Path) -> Path:
    """``root/{dev,val}/<subject>_{split}.csv`` with C-Eval's headers (dev has explanations)."""
    head = ["id", "question", "A", "B", "C", "D", "answer"]
    for subject, splits in CEVAL.items():
        dev = [[str(i), *r, f"正确答案是{r[5]}。"] for i, r in enumerate(splits["dev"])]
        _write(root / "dev" / f"{subject}_dev.csv", dev, [*head, "explanation"])
        val = [[str(i), *r] for i, r in enumerate(splits["val"])]
        _write(root / "val" / f"{subject}_val.csv", val, head)
    return root
