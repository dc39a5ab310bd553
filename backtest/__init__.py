"""The back-tester: replay recorded markets through the live decision chain and baselines (issue 7).

`cloudarb backtest --data DIR --portfolio FILE [--from --to] [--out DIR]` (cloudarb/cmd_backtest.py).
"""

from backtest.portfolio import Portfolio, load_portfolio, parse_portfolio
from backtest.report import build_report, headline, write_report
from backtest.sim import BASELINES, OURS, BacktestConfig, Result, run_backtest

__all__ = ["BASELINES", "OURS", "BacktestConfig", "Portfolio", "Result", "build_report", "headline",
           "load_portfolio", "parse_portfolio", "run_backtest", "write_report"]
